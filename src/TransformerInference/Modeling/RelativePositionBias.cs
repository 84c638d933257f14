using TorchSharp;
using TransformerInference.Loading;
using static TorchSharp.torch;

namespace TransformerInference.Modeling;

/// <summary>
/// T5's relative position bias (<see cref="PositionKind.RelativeBuckets"/>): a learned table [buckets, heads] read by
/// the bucket of each key-minus-query distance, added to the self-attention scores of every layer of a stack. The
/// table belongs to the stack's first layer (<c>{stack}.layers.0.self_attention_block.relative_bias.weight</c>); the
/// bias is computed once per call and shared by the layers.
/// </summary>
internal sealed class RelativePositionBias : IDisposable
{
    private readonly Tensor _table; // [buckets, heads]
    private readonly bool _bidirectional;
    private readonly int _buckets, _maxDistance;

    public RelativePositionBias(WeightSet w, string stack, TransformerConfig c, int heads, bool bidirectional)
    {
        _table = w.Take($"{stack}.layers.0.self_attention_block.relative_bias.weight", c.RelativeBuckets, heads);
        _bidirectional = bidirectional;
        _buckets = c.RelativeBuckets;
        _maxDistance = c.RelativeMaxDistance;
    }

    /// <summary>The bias [1, heads, queries, keys] for queries at positions offset..offset+queries-1 and keys at 0..keys-1.</summary>
    public Tensor Forward(long queries, long offset, long keys)
    {
        // Every Scalar held until its native call returns (see Held).
        using var first = offset.ToScalar();
        using var end = (offset + queries).ToScalar();
        using var keyCount = keys.ToScalar();
        var context = arange(first, end, int64, _table.device).unsqueeze(1);
        var memory = arange(Held.Zero, keyCount, int64, _table.device).unsqueeze(0);
        var buckets = Bucket(Held.Sub(memory, context));
        return _table.index_select(0, buckets.flatten()).view(queries, keys, -1).permute(2, 0, 1).unsqueeze(0);
    }

    /// <summary>Hugging Face's <c>_relative_position_bucket</c>: half the buckets (or all, causal) for exact small
    /// distances, the rest logarithmic up to the max distance; bidirectional buckets give keys after the query the
    /// upper half. Computed in float32 as there, so the boundaries fall where they fall there.</summary>
    private Tensor Bucket(Tensor relative)
    {
        var buckets = _buckets;
        Tensor result;
        Tensor distance;
        if (_bidirectional)
        {
            buckets /= 2;
            using var upper = buckets.ToScalar();
            result = relative.gt(Held.Zero).to(int64).mul(upper);
            distance = relative.abs();
        }
        else
        {
            result = zeros_like(relative);
            distance = relative.clamp_max(Held.Zero).neg();
        }
        var maxExact = buckets / 2;
        using var exact = maxExact.ToScalar();
        using var logRange = ((float)Math.Log((double)_maxDistance / maxExact)).ToScalar();
        using var logBuckets = ((float)(buckets - maxExact)).ToScalar();
        using var last = (buckets - 1).ToScalar();
        var small = distance.lt(exact);
        var large = distance.to(float32).div(exact).log().div(logRange).mul(logBuckets);
        var largeBucket = large.to(int64).add(exact, Held.One).clamp_max(last);
        return Held.Add(result, where(small, distance, largeBucket));
    }

    public void Dispose() => _table.Dispose();
}
