using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace TransformerInference.Modeling.Kernels;

/// <summary>
/// One weight product <c>y = x·Wᵀ + b</c> (W is <c>[out, in]</c> as PyTorch stores it), prepared once at load in the
/// layout its kernel wants. Every linear layer of the graph goes through this type, so the kernel (LibTorch, our own
/// CPU kernels, quantized weights) is chosen in one place. It owns the weight and bias it was given.
/// </summary>
internal abstract class LinearWeight : IDisposable
{
    protected LinearWeight(long outFeatures, long inFeatures)
    {
        OutFeatures = outFeatures;
        InFeatures = inFeatures;
    }

    /// <summary>Rows of W: the width of the output.</summary>
    public long OutFeatures { get; }

    /// <summary>Columns of W: the width of the input.</summary>
    public long InFeatures { get; }

    /// <summary><c>x [..., in]</c> → <c>[..., out]</c>.</summary>
    public abstract Tensor Forward(Tensor x);

    /// <summary>Frees the weight (and whatever the kernel prepared from it).</summary>
    public abstract void Dispose();
}

/// <summary>LibTorch's own product (<c>F.linear</c>) on the weight as loaded: every CUDA product, and the reference
/// the other kernels are checked against.</summary>
internal sealed class TorchLinear : LinearWeight
{
    private readonly Tensor _weight;
    private readonly Tensor? _bias;

    public TorchLinear(Tensor weight, Tensor? bias) : base(weight.shape[0], weight.shape[1])
    {
        _weight = weight;
        _bias = bias;
    }

    public override Tensor Forward(Tensor x) => F.linear(x, _weight, _bias);

    public override void Dispose()
    {
        _weight.Dispose();
        _bias?.Dispose();
    }
}

/// <summary>Chooses the kernel of each weight product at load.</summary>
internal static class LinearKernels
{
    public static LinearWeight Create(Tensor weight, Tensor? bias) => new TorchLinear(weight, bias);
}
