using TorchSharp;
using static TorchSharp.torch;

namespace TransformerInference.Modeling;

/// <summary>Boolean attention masks, true where a query may attend a key.</summary>
internal static class Masks
{
    /// <summary>Source key mask <c>[B,1,1,S]</c>: true where the source id is not padding.</summary>
    public static Tensor SourceKeyMask(Tensor sourceIds, int padId)
    {
        using var pad = padId.ToScalar(); // held until the native call returns (see Norm.Forward)
        return sourceIds.ne(pad).unsqueeze(1).unsqueeze(1);
    }

    /// <summary>Causal mask <c>[1,1,T,offset+T]</c> for <paramref name="count"/> queries at positions
    /// offset..offset+T-1: query i may attend key j when j ≤ offset + i.</summary>
    public static Tensor Causal(long count, long offset = 0, Device? device = null) =>
        ones(new[] { count, offset + count }, ScalarType.Bool, device).tril(offset).unsqueeze(0).unsqueeze(0);
}
