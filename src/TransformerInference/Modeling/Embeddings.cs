using TorchSharp;
using TransformerInference.Loading;
using TransformerInference.Modeling.Kernels;
using static TorchSharp.torch;

namespace TransformerInference.Modeling;

/// <summary>Token embeddings (optionally scaled by sqrt(d_model)) plus the additive position table, if any.</summary>
internal sealed unsafe class Embeddings : IDisposable
{
    private Tensor? _positions; // [offset + positions, d_model], absent for rotary; computed tables grow on demand
    private readonly PositionKind _kind;
    private readonly int _dModel;
    private readonly long _maxRows; // offset + the config's positions: the most a computed table may grow to
    private readonly ScalarType _dtype;
    private readonly Device _device;
    private readonly double _scale;
    private readonly long _offset;
    private readonly long _zeroPositionId = -1; // fairseq: tokens with this id get no position vector
    // The same three as Scalars, made once: rooted by these fields for every native call (see Held), and no per-step
    // allocation.
    private readonly Scalar _scaleScalar, _offsetScalar, _zeroPositionScalar;
    private readonly bool _host; // a CPU float32 model on our kernels: rows are gathered on the host (see Gather)

    public Embeddings(WeightSet w, string side, int vocab, int maxPositions, TransformerConfig c)
        : this(w, w.Take(side + "_embed.embedding.weight", vocab, c.DModel), side, maxPositions, c)
    {
    }

    /// <summary>Embeddings over a table taken elsewhere (shared source/target embeddings); owns <paramref name="table"/>.</summary>
    public Embeddings(WeightSet w, Tensor table, string side, int maxPositions, TransformerConfig c)
    {
        Table = table;
        _kind = c.Positions;
        _dModel = c.DModel;
        _maxRows = (long)c.PositionOffset + maxPositions;
        _dtype = w.DType;
        _device = w.Device;
        _scale = c.EmbeddingScale ? Math.Sqrt(c.DModel) : 1.0;
        // Computed sinusoids are built for the lengths actually used (a config may claim a billion positions): the
        // first rows now, more when a longer sequence arrives.
        _positions = c.Positions switch
        {
            PositionKind.Sinusoidal => SqueezeTable(w, w.Take(side + "_pos.pe", 1, maxPositions, c.DModel)),
            PositionKind.Learned => w.Take(side + "_pos.embedding.weight", c.PositionOffset + maxPositions, c.DModel),
            PositionKind.SinusoidalHalves or PositionKind.Fairseq =>
                w.Made(Computed(c.Positions, (int)Math.Min(_maxRows, c.PositionOffset + InitialRows), c.DModel, w.DType, w.Device)),
            _ => null,
        };
        if (c.Positions is PositionKind.SinusoidalHalves or PositionKind.Fairseq or PositionKind.Learned) _offset = c.PositionOffset;
        if (c.Positions == PositionKind.Fairseq) _zeroPositionId = c.PadId;
        _scaleScalar = _scale.ToScalar();
        _offsetScalar = _offset.ToScalar();
        _zeroPositionScalar = _zeroPositionId.ToScalar();
        _host = w.Kernels.Cpu is not null;
    }

    /// <summary>The stored table is [1, positions, d_model]; keep the [positions, d_model] view only.</summary>
    private static Tensor SqueezeTable(WeightSet w, Tensor pe)
    {
        using (pe) return w.Made(pe.squeeze(0));
    }

    /// <summary>Sine half then cosine half, rows 0..rows-1. Marian computes in float64 (numpy) and casts; fairseq in
    /// float32 (torch): each is reproduced in its own precision.</summary>
    private static Tensor Computed(PositionKind kind, int rows, int dModel, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        var half = dModel / 2;
        using var halfWidth = half.ToScalar(); // Scalars held until their native calls return (see Held)
        using var count = rows.ToScalar();
        Tensor angles;
        if (kind == PositionKind.SinusoidalHalves)
        {
            var i = arange(halfWidth, ScalarType.Float64);
            using var ratio = (2.0 / dModel).ToScalar();
            var frequency = pow(10000.0, i.mul(ratio)).reciprocal(); // the base becomes a tensor in this scope
            angles = arange(count, ScalarType.Float64).unsqueeze(1) * frequency.unsqueeze(0);
        }
        else
        {
            var step = Math.Log(10000.0) / (half - 1);
            using var negativeStep = ((float)-step).ToScalar();
            var frequency = exp(arange(halfWidth, ScalarType.Float32).mul(negativeStep));
            angles = arange(count, ScalarType.Float32).unsqueeze(1) * frequency.unsqueeze(0);
        }
        var table = cat(new[] { sin(angles), cos(angles) }, 1).to(ScalarType.Float32).to(dtype, device);
        return table.MoveToOuterDisposeScope();
    }

    /// <summary>The token embedding matrix [vocab, d_model] (also the tied output projection).</summary>
    public Tensor Table { get; }

    /// <summary>Embeds ids [B,T] sitting at positions offset..offset+T-1.</summary>
    public Tensor Forward(Tensor ids, long offset)
    {
        var needed = _offset + offset + ids.shape[1];
        if (_positions is not null && needed > _positions.shape[0] && needed <= _maxRows) Grow(needed);
        if (Hosted(ids) && (_positions is null || needed <= _positions.shape[0])) return Gather(ids, _offset + offset, null);
        var x = Table.index_select(0, ids.flatten()).view(ids.shape[0], ids.shape[1], -1);
        if (_scale != 1.0) x = x.mul(_scaleScalar);
        if (_positions is null) return x;
        var positions = _positions.narrow(0, _offset + offset, ids.shape[1]);
        if (_zeroPositionId < 0) return Held.Add(x, positions);
        return Held.Add(x, positions * ids.ne(_zeroPositionScalar).unsqueeze(-1).to(x.dtype));
    }

    /// <summary>Whether <see cref="Gather"/> can read these ids and the tables in place.</summary>
    private bool Hosted(Tensor ids) => _host && ids.device_type == DeviceType.CPU && ids.dtype == ScalarType.Int64
        && ids.is_contiguous() && Table.is_contiguous() && (_positions is null || _positions.is_contiguous());

    /// <summary>
    /// The embedding on the host for a CPU float32 model, the same arithmetic as the tensor ops: each row is
    /// <c>table[id] · scale + position</c> (float32, one rounding each), the position of token t of row b being
    /// <paramref name="first"/> + t, or <paramref name="first"/> + <paramref name="rowPositions"/>[b]; fairseq pad
    /// tokens add the position times 0, as the tensor path does. Ids and positions were checked by the caller.
    /// </summary>
    private Tensor Gather(Tensor ids, long first, long* rowPositions)
    {
        long batch = ids.shape[0], count = ids.shape[1], d = _dModel;
        var x = empty(new[] { batch, count, d }, ScalarType.Float32);
        var id = (long*)PackedLinear.Pointer(ids);
        var table = (float*)PackedLinear.Pointer(Table);
        var positions = _positions is null ? null : (float*)PackedLinear.Pointer(_positions);
        var output = (float*)PackedLinear.Pointer(x);
        var scale = (float)_scale;
        for (long b = 0; b < batch; b++)
        {
            for (long t = 0; t < count; t++, id++, output += d)
            {
                var row = table + *id * d;
                for (long i = 0; i < d; i++) output[i] = _scale != 1.0 ? row[i] * scale : row[i];
                if (positions is null) continue;
                var p = positions + (first + (rowPositions is null ? t : rowPositions[b])) * d;
                var keep = _zeroPositionId >= 0 && *id == _zeroPositionId ? 0f : 1f;
                for (long i = 0; i < d; i++) output[i] += _zeroPositionId < 0 ? p[i] : p[i] * keep;
            }
        }
        return x;
    }

    /// <summary>Rows a computed table starts with.</summary>
    private const int InitialRows = 256;

    /// <summary>Recomputes a computed table with room for <paramref name="rows"/> (doubling, at most the config's
    /// positions); every row's values depend on its position only, so they are the same as in a full table.</summary>
    private void Grow(long rows)
    {
        var size = Math.Min(_maxRows, Math.Max(rows, 2 * _positions!.shape[0]));
        var grown = Computed(_kind, (int)size, _dModel, _dtype, _device).DetachFromDisposeScope();
        _positions.Dispose();
        _positions = grown;
    }

    /// <summary>Embeds one id per row [B,1], each at its own position (<paramref name="positions"/> [B,1] int64):
    /// rows that joined a running batch.</summary>
    public Tensor Forward(Tensor ids, Tensor positions)
    {
        if (Hosted(ids) && ids.shape[1] == 1 && positions.device_type == DeviceType.CPU && positions.dtype == ScalarType.Int64
            && positions.is_contiguous() && positions.numel() == ids.shape[0])
        {
            var at = (long*)PackedLinear.Pointer(positions);
            var limit = _positions?.shape[0] ?? long.MaxValue;
            var fits = true;
            for (long b = 0; b < ids.shape[0]; b++) fits &= at[b] >= 0 && _offset + at[b] < limit;
            if (fits) return Gather(ids, _offset, at);
        }
        var x = Table.index_select(0, ids.flatten()).view(ids.shape[0], ids.shape[1], -1);
        if (_scale != 1.0) x = x.mul(_scaleScalar);
        if (_positions is null) return x;
        var rows = _positions.index_select(0, positions.flatten().add(_offsetScalar, Held.One)).view(ids.shape[0], 1, -1);
        if (_zeroPositionId < 0) return Held.Add(x, rows);
        return Held.Add(x, rows * ids.ne(_zeroPositionScalar).unsqueeze(-1).to(x.dtype));
    }

    public void Dispose()
    {
        Table.Dispose();
        _positions?.Dispose();
        _scaleScalar.Dispose();
        _offsetScalar.Dispose();
        _zeroPositionScalar.Dispose();
    }
}
