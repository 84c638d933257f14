using TorchSharp;
using TransformerInference.Loading;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace TransformerInference.Modeling;

/// <summary>One normalisation of the kind the config names (seed LayerNormalization, torch LayerNorm or RMSNorm).</summary>
internal sealed class Norm : IDisposable
{
    private readonly NormKind _kind;
    private readonly double _eps;
    private readonly long[] _shape;
    private static readonly long[] _lastDim = { -1 };
    private readonly Tensor _weight;
    private readonly Tensor? _bias;

    public Norm(WeightSet weights, string prefix, TransformerConfig config)
    {
        _kind = config.Norm;
        _eps = config.NormEps;
        _shape = new long[] { config.DModel };
        _weight = weights.Take(prefix + (_kind == NormKind.Seed ? ".alpha" : ".weight"), config.DModel);
        _bias = weights.TakeIf(_kind != NormKind.RmsNorm, prefix + ".bias", config.DModel);
    }

    public Tensor Forward(Tensor x)
    {
        // Scalars held by `using` until the native call returns: an implicit temporary may be finalized by the GC
        // while LibTorch still reads it (seen as "Unknown scalar type" under GC pressure).
        using var eps = _eps.ToScalar();
        switch (_kind)
        {
            case NormKind.Seed:
                // The seed's own norm: unbiased std, eps added to the std (not inside a square root). One std_mean
                // and in-place updates: half the time of the textbook five-op form on small widths.
                var (std, mean) = std_mean(x, _lastDim, unbiased: true, keepdim: true);
                return addcmul(_bias!, _weight, Held.Sub(x, mean).div_(std.add_(eps, Held.One)), Held.One);
            case NormKind.LayerNorm:
                return F.layer_norm(x, _shape, _weight, _bias, _eps);
            default:
                return x * (x * x).mean(new long[] { -1 }, keepdim: true).add_(eps, Held.One).rsqrt_() * _weight;
        }
    }

    public void Dispose()
    {
        _weight.Dispose();
        _bias?.Dispose();
    }
}
