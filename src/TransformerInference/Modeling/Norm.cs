using TorchSharp;
using TransformerInference.Loading;
using TransformerInference.Modeling.Kernels;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace TransformerInference.Modeling;

/// <summary>One normalisation of the kind the config names (seed LayerNormalization, torch LayerNorm or RMSNorm).
/// Models on our CPU kernels run it (and the residual add before it, see <see cref="AddForward"/>) with
/// <see cref="NormKernel{TOps, TV}"/>; others with LibTorch ops.</summary>
internal sealed unsafe class Norm : IDisposable
{
    private readonly NormKind _kind;
    private readonly double _eps;
    private readonly long[] _shape;
    private static readonly long[] _lastDim = { -1 };
    private readonly Tensor _weight;
    private readonly Tensor? _bias;
    private readonly CpuKernel? _kernel;
    private readonly float[]? _weights, _biases; // pinned float32 copies for the kernel

    public Norm(WeightSet weights, string prefix, TransformerConfig config)
    {
        _kind = config.Norm;
        _eps = config.NormEps;
        _shape = new long[] { config.DModel };
        _weight = weights.Take(prefix + (_kind == NormKind.Seed ? ".alpha" : ".weight"), config.DModel);
        _bias = weights.TakeIf(_kind != NormKind.RmsNorm, prefix + ".bias", config.DModel);
        _kernel = weights.Kernels.Cpu;
        if (_kernel is null) return;
        _weights = Pinned(_weight);
        _biases = _bias is null ? null : Pinned(_bias);
    }

    private static float[] Pinned(Tensor t)
    {
        using var scope = NewDisposeScope();
        var copy = GC.AllocateUninitializedArray<float>((int)t.numel(), pinned: true);
        t.to(ScalarType.Float32, CPU).contiguous().data<float>().CopyTo(copy);
        return copy;
    }

    /// <summary>Whether the kernel runs on <paramref name="x"/> (plus <paramref name="residual"/>): a model on our CPU
    /// kernels, contiguous inputs of one shape.</summary>
    private bool Own(Tensor x, Tensor? residual = null) => _kernel is not null && x.is_contiguous()
        && (residual is null || (residual.is_contiguous() && x.shape.SequenceEqual(residual.shape)));

    /// <summary>The norm of <c>x + residual</c>, and that sum (the residual connection's output).</summary>
    public (Tensor Sum, Tensor Normed) AddForward(Tensor x, Tensor residual)
    {
        if (!Own(x, residual))
        {
            var sum = Held.Add(x, residual);
            return (sum, Forward(sum));
        }
        var shape = x.shape;
        var s = empty(shape, ScalarType.Float32);
        var y = empty(shape, ScalarType.Float32);
        Run(x, residual, s, y);
        return (s, y);
    }

    /// <summary>The norm of <c>x + residual</c> alone (post-norm blocks).</summary>
    public Tensor AddForwardNormOnly(Tensor x, Tensor residual)
    {
        if (!Own(x, residual)) return Forward(Held.Add(x, residual));
        var y = empty(x.shape, ScalarType.Float32);
        Run(x, residual, y, y);
        return y;
    }

    private void Run(Tensor x, Tensor? residual, Tensor? sum, Tensor y) =>
        Run((float*)PackedLinear.Pointer(x), residual is null ? null : (float*)PackedLinear.Pointer(residual),
            sum is null ? null : (float*)PackedLinear.Pointer(sum), (float*)PackedLinear.Pointer(y), x.numel() / _weights!.Length);

    /// <summary>Whether <see cref="Run(float*, float*, float*, float*, long)"/> can be used (our CPU kernels).</summary>
    internal bool HasKernel => _kernel is not null;

    /// <summary>The kernel on raw rows: <c>y = norm(x [+ residual])</c>, the sum stored in <paramref name="sum"/>
    /// (which may be <paramref name="x"/> or <paramref name="y"/>).</summary>
    internal void Run(float* x, float* residual, float* sum, float* y, long rows)
    {
        fixed (float* w = _weights, b = _biases)
            StepKernels.Norm(_kernel!.Value, _kind, x, residual, sum, y, rows, _weights!.Length, (float)_eps, w, b);
    }

    public Tensor Forward(Tensor x)
    {
        if (Own(x))
        {
            var y = empty(x.shape, ScalarType.Float32);
            Run(x, null, null, y);
            return y;
        }
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
