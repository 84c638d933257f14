using TransformerInference.Decoding;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace TransformerInference.Modeling;

/// <summary>
/// The weight-free part of multi-head / grouped-query attention: head split, rotary, KV-cache append, scaled dot
/// product and head merge. Query head h reads key/value head h / (H/G); queries are laid out as
/// <c>[B, G, (H/G)·T, d_k]</c> so grouped keys and values are read in place, never repeated.
/// </summary>
internal sealed class AttentionHeads
{
    private readonly long _heads, _kvHeads, _group, _headDim;
    private readonly Rotary? _rotary;

    public AttentionHeads(TransformerConfig config, Rotary? rotary)
    {
        _heads = config.Heads;
        _kvHeads = config.EffectiveKvHeads;
        _group = _heads / _kvHeads;
        _headDim = config.HeadDim;
        _rotary = rotary;
    }

    public long QueryWidth => _heads * _headDim;
    public long KvWidth => _kvHeads * _headDim;

    /// <summary>[B, S, G·d_k] → [B, G, S, d_k].</summary>
    public Tensor SplitKv(Tensor x) => x.shape[1] == 1
        ? x.reshape(x.shape[0], _kvHeads, 1, _headDim) // one position: the transpose would not move anything
        : x.reshape(x.shape[0], x.shape[1], _kvHeads, _headDim).transpose(1, 2);

    /// <summary>
    /// Self-attention on projected q [B,T,H·d_k], k and v [B,T,G·d_k] at target positions offset..offset+T-1.
    /// With a cache the new keys/values are appended to it and attention covers every cached position.
    /// Returns the merged heads [B,T,H·d_k] (before the output projection).
    /// </summary>
    public Tensor SelfAttend(Tensor q, Tensor k, Tensor v, Tensor? mask, long offset, KvCache? cache, int layer)
    {
        var count = q.shape[1];
        var keys = SplitKv(k);
        var values = SplitKv(v);
        var perRow = cache?.RaggedStep?.Positions; // rows that joined a running batch: each at its own position
        if (_rotary is not null) keys = perRow is null ? _rotary.Apply(keys, offset, count) : _rotary.Apply(keys, perRow);
        if (cache is not null) (keys, values) = cache.Append(layer, keys, values);
        return Attend(q, keys, values, mask, _rotary is null ? -1 : offset, perRow);
    }

    /// <summary>Attention of q [B,T,H·d_k] over prepared keys/values [B,G,S,d_k]; mask [B|1, 1, T|1, S] (true = attend).
    /// <paramref name="rotaryOffset"/> ≥ 0 rotates the queries from that position (<paramref name="rotaryPositions"/>
    /// [B,1]: one query per row, each at its own position).</summary>
    public Tensor Attend(Tensor q, Tensor keys, Tensor values, Tensor? mask, long rotaryOffset = -1, Tensor? rotaryPositions = null)
    {
        long batch = q.shape[0], count = q.shape[1];
        Tensor queries;
        if (count == 1)
        {
            // One new token: [B,1,H·d_k] is already [B,G,R,d_k] in memory.
            queries = q.reshape(batch, _kvHeads, _group, _headDim);
            if (rotaryOffset >= 0) queries = rotaryPositions is null ? _rotary!.Apply(queries, rotaryOffset, 1) : _rotary!.Apply(queries, rotaryPositions);
        }
        else
        {
            queries = q.reshape(batch, count, _kvHeads, _group, _headDim).permute(0, 2, 3, 1, 4);
            if (rotaryOffset >= 0) queries = _rotary!.Apply(queries, rotaryOffset, count);
            queries = queries.reshape(batch, _kvHeads, _group * count, _headDim);
            if (mask is not null && _group > 1 && mask.shape[2] > 1)
                mask = mask.unsqueeze(2).expand(mask.shape[0], 1, _group, count, mask.shape[3])
                    .reshape(mask.shape[0], 1, _group * count, mask.shape[3]);
        }
        var output = F.scaled_dot_product_attention(queries, keys, values, mask); // [B,G,R·T,d_k]
        if (count == 1) return output.reshape(batch, 1, QueryWidth);
        return output.view(batch, _kvHeads, _group, count, _headDim).permute(0, 3, 1, 2, 4).reshape(batch, count, QueryWidth);
    }
}
