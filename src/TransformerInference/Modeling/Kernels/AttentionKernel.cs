using System.Runtime.CompilerServices;

namespace TransformerInference.Modeling.Kernels;

/// <summary>Where one-query attention reads and writes: raw CPU float32 memory with strides in floats. Keys and
/// values of one row and head are <see cref="Positions"/> consecutive vectors of <see cref="HeadDim"/> floats.</summary>
internal unsafe struct OneQueryAttention
{
    /// <summary>Queries: row <c>b</c>, head <c>h</c> at <c>Queries + b·QueryRow + h·HeadDim</c>.</summary>
    public float* Queries;
    public long QueryRow;
    /// <summary>Keys and values of position 0: row <c>b</c>, key/value head <c>g</c> at <c>+ b·KvRow + g·KvHead</c>.</summary>
    public float* Keys, Values;
    public long KvRow, KvHead;
    /// <summary>Boolean mask bytes (nonzero = attend), row <c>b</c> at <c>Mask + b·MaskRow</c>; null: every position.</summary>
    public byte* Mask;
    public long MaskRow;
    /// <summary>Output <c>[batch, heads·HeadDim]</c>, contiguous.</summary>
    public float* Output;
    public int Batch, Heads, KvHeads, HeadDim, Positions;
    /// <summary>What queries are multiplied by before the dot products (1/√d).</summary>
    public float Scale;
}

/// <summary>
/// Attention of one query per row over <see cref="OneQueryAttention.Positions"/> keys (a decode step), in Hugging
/// Face's eager order: the query times the scale, its dot product with every key, minus the largest, exp, divided by
/// their sum, then the weighted sum of the values. Query head <c>h</c> reads key/value head <c>h / (Heads/KvHeads)</c>.
/// Masked positions are skipped, so a row's result is the same whatever padding or spare positions it sits beside.
/// A row with no position to attend gives zeros, as LibTorch's scaled dot product does.
/// The weighted sums are one fused multiply-add chain per element over the positions in order (the same bits in
/// every vector width); the dot products sum vector lanes, so widths agree to rounding.
/// </summary>
internal static unsafe class AttentionKernel<TOps, TV> where TOps : IVectorOps<TV> where TV : struct
{
    private const int StackPositions = 2048;

    public static void Run(in OneQueryAttention a)
    {
        var d = a.HeadDim;
        var group = a.Heads / a.KvHeads;
        var query = stackalloc float[d];
        Span<float> weights = a.Positions <= StackPositions ? stackalloc float[a.Positions] : new float[a.Positions];
        fixed (float* p = weights)
        {
            for (var b = 0; b < a.Batch; b++)
            {
                var mask = a.Mask == null ? null : a.Mask + b * a.MaskRow;
                for (var h = 0; h < a.Heads; h++)
                {
                    var g = h / group;
                    Head(a.Queries + b * a.QueryRow + (long)h * d, a.Keys + b * a.KvRow + g * a.KvHead,
                        a.Values + b * a.KvRow + g * a.KvHead, mask, a.Positions, d, a.Scale, query, p,
                        a.Output + ((long)b * a.Heads + h) * d);
                }
            }
        }
    }

    private static void Head(float* q, float* keys, float* values, byte* mask, int positions, int d, float scale,
        float* query, float* p, float* output)
    {
        var c = TOps.Count;
        var s = TOps.Create(scale);
        var i = 0;
        for (; i + c <= d; i += c) TOps.Store(query + i, TOps.Multiply(TOps.Load(q + i), s));
        for (; i < d; i++) query[i] = q[i] * scale;

        var max = float.NegativeInfinity;
        var any = false;
        for (var j = 0; j < positions; j++)
        {
            if (mask != null && mask[j] == 0) continue;
            var score = Dot(query, keys + (long)j * d, d);
            p[j] = score;
            max = any ? MathF.Max(max, score) : score;
            any = true;
        }
        if (!any)
        {
            new Span<float>(output, d).Clear();
            return;
        }
        var sum = 0f;
        for (var j = 0; j < positions; j++)
        {
            if (mask != null && mask[j] == 0) continue;
            var e = MathF.Exp(p[j] - max);
            p[j] = e;
            sum += e;
        }
        for (var j = 0; j < positions; j++)
            if (mask == null || mask[j] != 0) p[j] /= sum;

        i = 0;
        for (; i + c <= d; i += c)
        {
            var acc = TOps.Zero;
            var v = values + i;
            for (var j = 0; j < positions; j++, v += d)
            {
                if (mask != null && mask[j] == 0) continue;
                acc = TOps.MultiplyAdd(TOps.Create(p[j]), TOps.Load(v), acc);
            }
            TOps.Store(output + i, acc);
        }
        for (; i < d; i++)
        {
            var acc = 0f;
            for (var j = 0; j < positions; j++)
            {
                if (mask != null && mask[j] == 0) continue;
                acc = MathF.FusedMultiplyAdd(p[j], values[(long)j * d + i], acc);
            }
            output[i] = acc;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Dot(float* a, float* b, int d)
    {
        var c = TOps.Count;
        var acc = TOps.Zero;
        var i = 0;
        for (; i + c <= d; i += c) acc = TOps.MultiplyAdd(TOps.Load(a + i), TOps.Load(b + i), acc);
        var sum = TOps.Sum(acc);
        for (; i < d; i++) sum = MathF.FusedMultiplyAdd(a[i], b[i], sum);
        return sum;
    }
}
