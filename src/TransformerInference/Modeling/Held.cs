using TorchSharp;
using static TorchSharp.torch;

namespace TransformerInference.Modeling;

/// <summary>
/// Scalars that live as long as the process. LibTorch reads a Scalar argument during the native call, but
/// TorchSharp's implicit conversions — and <c>a + b</c> / <c>a - b</c>, which pass an implicit <c>alpha = 1</c> —
/// create temporaries that nothing references once their handle is read: under GC pressure the finalizer can free
/// one mid-call (seen in the fuzz suite as native "Unknown scalar type" errors, a use after free). Hot paths use
/// these rooted ones, or hold a per-call Scalar with <c>using</c> (which keeps it reachable until the scope ends).
/// The same holds for every call that takes a Scalar: <c>x * 0.5</c>, <c>fill_(double)</c>, <c>index_fill_</c>,
/// <c>arange(n)</c>, <c>lt(0)</c>, and <c>add_(Scalar)</c> (another implicit <c>alpha = 1</c>).
/// </summary>
internal static class Held
{
    public static readonly Scalar One = 1.ToScalar();
    public static readonly Scalar MinusOne = (-1).ToScalar();
    public static readonly Scalar Zero = 0.ToScalar();
    public static readonly Scalar NegativeInfinity = double.NegativeInfinity.ToScalar();

    /// <summary><c>a + b</c> without a temporary Scalar.</summary>
    public static Tensor Add(Tensor a, Tensor b) => a.add(b, One);

    /// <summary><c>a - b</c> without a temporary Scalar.</summary>
    public static Tensor Sub(Tensor a, Tensor b) => a.add(b, MinusOne);
}
