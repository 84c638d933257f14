using TransformerInference.Loading;
using static TorchSharp.torch;

namespace TransformerInference.Modeling;

/// <summary>Token embeddings (optionally scaled by sqrt(d_model)) plus the additive position table, if any.</summary>
internal sealed class Embeddings : IDisposable
{
    private readonly Tensor? _positions; // [offset + max_positions, d_model], absent for rotary
    private readonly double _scale;
    private readonly long _offset;
    private readonly long _zeroPositionId = -1; // fairseq: tokens with this id get no position vector

    public Embeddings(WeightSet w, string side, int vocab, int maxPositions, TransformerConfig c)
        : this(w, w.Take(side + "_embed.embedding.weight", vocab, c.DModel), side, maxPositions, c)
    {
    }

    /// <summary>Embeddings over a table taken elsewhere (shared source/target embeddings); owns <paramref name="table"/>.</summary>
    public Embeddings(WeightSet w, Tensor table, string side, int maxPositions, TransformerConfig c)
    {
        Table = table;
        _scale = c.EmbeddingScale ? Math.Sqrt(c.DModel) : 1.0;
        _positions = c.Positions switch
        {
            PositionKind.Sinusoidal => SqueezeTable(w, w.Take(side + "_pos.pe", 1, maxPositions, c.DModel)),
            PositionKind.Learned => w.Take(side + "_pos.embedding.weight", c.PositionOffset + maxPositions, c.DModel),
            PositionKind.SinusoidalHalves or PositionKind.Fairseq => w.Made(Computed(c.Positions, c.PositionOffset + maxPositions, c.DModel, w)),
            _ => null,
        };
        if (c.Positions is PositionKind.SinusoidalHalves or PositionKind.Fairseq or PositionKind.Learned) _offset = c.PositionOffset;
        if (c.Positions == PositionKind.Fairseq) _zeroPositionId = c.PadId;
    }

    /// <summary>The stored table is [1, positions, d_model]; keep the [positions, d_model] view only.</summary>
    private static Tensor SqueezeTable(WeightSet w, Tensor pe)
    {
        using (pe) return w.Made(pe.squeeze(0));
    }

    /// <summary>Sine half then cosine half, rows 0..rows-1. Marian computes in float64 (numpy) and casts; fairseq in
    /// float32 (torch): each is reproduced in its own precision.</summary>
    private static Tensor Computed(PositionKind kind, int rows, int dModel, WeightSet w)
    {
        using var scope = NewDisposeScope();
        var half = dModel / 2;
        Tensor angles;
        if (kind == PositionKind.SinusoidalHalves)
        {
            var i = arange(half, ScalarType.Float64);
            var frequency = pow(10000.0, i * (2.0 / dModel)).reciprocal();
            angles = arange(rows, ScalarType.Float64).unsqueeze(1) * frequency.unsqueeze(0);
        }
        else
        {
            var step = Math.Log(10000.0) / (half - 1);
            var frequency = exp(arange(half, ScalarType.Float32) * (float)-step);
            angles = arange(rows, ScalarType.Float32).unsqueeze(1) * frequency.unsqueeze(0);
        }
        var table = cat(new[] { sin(angles), cos(angles) }, 1).to(ScalarType.Float32).to(w.DType, w.Device);
        return table.MoveToOuterDisposeScope();
    }

    /// <summary>The token embedding matrix [vocab, d_model] (also the tied output projection).</summary>
    public Tensor Table { get; }

    /// <summary>Embeds ids [B,T] sitting at positions offset..offset+T-1.</summary>
    public Tensor Forward(Tensor ids, long offset)
    {
        var x = Table.index_select(0, ids.flatten()).view(ids.shape[0], ids.shape[1], -1);
        if (_scale != 1.0) x = x * _scale;
        if (_positions is null) return x;
        var positions = _positions.narrow(0, _offset + offset, ids.shape[1]);
        if (_zeroPositionId < 0) return x + positions;
        return x + positions * ids.ne(_zeroPositionId).unsqueeze(-1).to(x.dtype);
    }

    /// <summary>Embeds one id per row [B,1], each at its own position (<paramref name="positions"/> [B,1] int64):
    /// rows that joined a running batch.</summary>
    public Tensor Forward(Tensor ids, Tensor positions)
    {
        var x = Table.index_select(0, ids.flatten()).view(ids.shape[0], ids.shape[1], -1);
        if (_scale != 1.0) x = x * _scale;
        if (_positions is null) return x;
        var rows = _positions.index_select(0, positions.flatten() + _offset).view(ids.shape[0], 1, -1);
        if (_zeroPositionId < 0) return x + rows;
        return x + rows * ids.ne(_zeroPositionId).unsqueeze(-1).to(x.dtype);
    }

    public void Dispose()
    {
        Table.Dispose();
        _positions?.Dispose();
    }
}
