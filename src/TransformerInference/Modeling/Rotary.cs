using TorchSharp;
using static TorchSharp.torch;

namespace TransformerInference.Modeling;

/// <summary>
/// Rotary position tables and their application in LLaMA's interleaved-pair layout: the pair (u[2i], u[2i+1]) is
/// rotated by the angle p·θ_i, θ_i = theta^(−2i/d_k).
/// </summary>
internal sealed class Rotary : IDisposable
{
    private Tensor _cos; // [rows, d_k/2], rows ≤ the model's positions: built for the lengths actually used
    private Tensor _sin;
    private readonly long _headDim, _maxPositions;
    private readonly double _theta;
    private readonly Device _device;
    private readonly ScalarType _dtype;

    public Rotary(int positions, int headDim, double theta, Device device, ScalarType dtype)
    {
        _headDim = headDim;
        _maxPositions = positions;
        _theta = theta;
        _device = device;
        _dtype = dtype;
        (_cos, _sin) = Tables(Math.Min(positions, 256));
    }

    /// <summary>Cosine and sine tables for positions 0..rows-1 (each row depends on its position only).</summary>
    private (Tensor Cos, Tensor Sin) Tables(long rows)
    {
        using var scope = NewDisposeScope();
        // Scalars held until their native calls return (see Held).
        using var width = _headDim.ToScalar();
        using var two = 2.ToScalar();
        using var divisor = (-(double)_headDim).ToScalar();
        using var count = rows.ToScalar();
        var inv = pow(_theta, arange(Held.Zero, width, two, float64).div(divisor));
        var angles = arange(Held.Zero, count, Held.One, float64).unsqueeze(1) * inv.unsqueeze(0);
        return (angles.cos().to(_dtype, _device).DetachFromDisposeScope(), angles.sin().to(_dtype, _device).DetachFromDisposeScope());
    }

    /// <summary>Rotates <paramref name="x"/> whose second-last dimension holds <paramref name="count"/> positions
    /// starting at <paramref name="offset"/> (a single position may also broadcast over that dimension).</summary>
    public Tensor Apply(Tensor x, long offset, long count)
    {
        if (offset + count > _cos.shape[0] && offset + count <= _maxPositions)
        {
            var (cos, sin) = Tables(Math.Min(_maxPositions, Math.Max(offset + count, 2 * _cos.shape[0])));
            _cos.Dispose();
            _sin.Dispose();
            (_cos, _sin) = (cos, sin);
        }
        var c = _cos.narrow(0, offset, count);
        var s = _sin.narrow(0, offset, count);
        var even = x.slice(-1, 0, _headDim, 2);
        var odd = x.slice(-1, 1, _headDim, 2);
        return stack(new[] { Held.Sub(even * c, odd * s), Held.Add(even * s, odd * c) }, -1).flatten(-2);
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
        return stack(new[] { Held.Sub(even * c, odd * s), Held.Add(even * s, odd * c) }, -1).flatten(-2);
    }

    public void Dispose()
    {
        _cos.Dispose();
        _sin.Dispose();
    }
}
