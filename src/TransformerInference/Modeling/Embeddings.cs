using TransformerInference.Loading;
using static TorchSharp.torch;

namespace TransformerInference.Modeling;

/// <summary>Token embeddings (optionally scaled by sqrt(d_model)) plus the additive position table, if any.</summary>
internal sealed class Embeddings : IDisposable
{
    private readonly Tensor? _positions; // [max_positions, d_model], absent for rotary
    private readonly double _scale;

    public Embeddings(WeightSet w, string side, int vocab, int maxPositions, TransformerConfig c)
    {
        Table = w.Take(side + "_embed.embedding.weight", vocab, c.DModel);
        _scale = c.EmbeddingScale ? Math.Sqrt(c.DModel) : 1.0;
        _positions = c.Positions switch
        {
            PositionKind.Sinusoidal => SqueezeTable(w, w.Take(side + "_pos.pe", 1, maxPositions, c.DModel)),
            PositionKind.Learned => w.Take(side + "_pos.embedding.weight", maxPositions, c.DModel),
            _ => null,
        };
    }

    /// <summary>The stored table is [1, positions, d_model]; keep the [positions, d_model] view only.</summary>
    private static Tensor SqueezeTable(WeightSet w, Tensor pe)
    {
        using (pe) return w.Made(pe.squeeze(0));
    }

    /// <summary>The token embedding matrix [vocab, d_model] (also the tied output projection).</summary>
    public Tensor Table { get; }

    /// <summary>Embeds ids [B,T] sitting at positions offset..offset+T-1.</summary>
    public Tensor Forward(Tensor ids, long offset)
    {
        var x = Table.index_select(0, ids.flatten()).view(ids.shape[0], ids.shape[1], -1);
        if (_scale != 1.0) x = x * _scale;
        return _positions is null ? x : x + _positions.narrow(0, offset, ids.shape[1]);
    }

    public void Dispose()
    {
        Table.Dispose();
        _positions?.Dispose();
    }
}
