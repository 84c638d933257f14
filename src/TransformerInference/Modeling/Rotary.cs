using static TorchSharp.torch;

namespace TransformerInference.Modeling;

/// <summary>
/// Rotary position tables and their application in LLaMA's interleaved-pair layout: the pair (u[2i], u[2i+1]) is
/// rotated by the angle p·θ_i, θ_i = theta^(−2i/d_k).
/// </summary>
internal sealed class Rotary : IDisposable
{
    private readonly Tensor _cos; // [positions, d_k/2]
    private readonly Tensor _sin;
    private readonly long _headDim;

    public Rotary(int positions, int headDim, double theta, Device device, ScalarType dtype)
    {
        _headDim = headDim;
        using var scope = NewDisposeScope();
        var inv = pow(theta, arange(0, headDim, 2, float64) / -(double)headDim);
        var angles = arange(0, positions, 1, float64).unsqueeze(1) * inv.unsqueeze(0);
        _cos = angles.cos().to(dtype, device).DetachFromDisposeScope();
        _sin = angles.sin().to(dtype, device).DetachFromDisposeScope();
    }

    /// <summary>Rotates <paramref name="x"/> whose second-last dimension holds <paramref name="count"/> positions
    /// starting at <paramref name="offset"/> (a single position may also broadcast over that dimension).</summary>
    public Tensor Apply(Tensor x, long offset, long count)
    {
        var c = _cos.narrow(0, offset, count);
        var s = _sin.narrow(0, offset, count);
        var even = x.slice(-1, 0, _headDim, 2);
        var odd = x.slice(-1, 1, _headDim, 2);
        return stack(new[] { even * c - odd * s, even * s + odd * c }, -1).flatten(-2);
    }

    /// <summary>Rotates <paramref name="x"/> [B, …, 1, d_k] (one position per row) at each row's own position
    /// (<paramref name="positions"/> [B,1] int64).</summary>
    public Tensor Apply(Tensor x, Tensor positions)
    {
        var shape = new long[x.dim()];
        Array.Fill(shape, 1L);
        shape[0] = x.shape[0];
        shape[^1] = _headDim / 2;
        var c = _cos.index_select(0, positions.flatten()).view(shape);
        var s = _sin.index_select(0, positions.flatten()).view(shape);
        var even = x.slice(-1, 0, _headDim, 2);
        var odd = x.slice(-1, 1, _headDim, 2);
        return stack(new[] { even * c - odd * s, even * s + odd * c }, -1).flatten(-2);
    }

    public void Dispose()
    {
        _cos.Dispose();
        _sin.Dispose();
    }
}
