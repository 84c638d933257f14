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
/// A row with no position to attend gives zeros, as LibTorch's scaled dot product does (2.5 and later; a test pins it).
/// The weighted sums are one fused multiply-add chain per element over the positions in order (the same bits in
/// every vector width); the dot products sum vector lanes, so widths agree to rounding.
/// </summary>
internal static unsafe class AttentionKernel<TOps, TV> where TOps : IVectorOps<TV> where TV : struct
{
    private const int StackPositions = 2048;

    // Not zeroed: every slot is written before it is read (the exp pass's lanes past the last position never are).
    [SkipLocalsInit]
    public static void Run(in OneQueryAttention a)
    {
        var d = a.HeadDim;
        var group = a.Heads / a.KvHeads;
        var query = stackalloc float[d];
        // Room for one vector past the last position: the exp pass runs over whole vectors.
        var room = a.Positions + TOps.Count;
        var rented = room <= StackPositions ? null : System.Buffers.ArrayPool<float>.Shared.Rent(room); // long sources
        Span<float> weights = rented ?? stackalloc float[room];
        try
        {
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
        finally
        {
            if (rented is not null) System.Buffers.ArrayPool<float>.Shared.Return(rented);
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

        // Every position's dot product, four keys at a time (four independent chains; each key's sum is the same as
        // alone). Masked positions are computed too; their results are never read.
        var j0 = 0;
        for (; j0 + 4 <= positions; j0 += 4) Dot4(query, keys + (long)j0 * d, d, p + j0);
        for (; j0 < positions; j0++) p[j0] = Dot(query, keys + (long)j0 * d, d);

        var max = float.NegativeInfinity;
        var any = false;
        for (var j = 0; j < positions; j++)
        {
            if (mask != null && mask[j] == 0) continue;
            max = any ? MathF.Max(max, p[j]) : p[j];
            any = true;
        }
        if (!any)
        {
            new Span<float>(output, d).Clear();
            return;
        }
        // exp(score − max) for every position, whole vectors (lanes past the last position and masked positions are
        // never read); the sum over the attended positions in order.
        var m = TOps.Create(max);
        for (var j = 0; j < positions; j += c) TOps.Store(p + j, TOps.Exp(TOps.Subtract(TOps.Load(p + j), m)));
        var sum = 0f;
        for (var j = 0; j < positions; j++)
            if (mask == null || mask[j] != 0) sum += p[j];

        // output = Σ_j p_j · v_j, one fused multiply-add per element and position, positions in order; the row of
        // sums stays in L1 between positions (every vector of it is an independent chain).
        new Span<float>(output, d).Clear();
        var v = values;
        for (var j = 0; j < positions; j++, v += d)
        {
            if (mask != null && mask[j] == 0) continue;
            var weight = p[j] / sum;
            var w = TOps.Create(weight);
            i = 0;
            for (; i + c <= d; i += c) TOps.Store(output + i, TOps.MultiplyAdd(w, TOps.Load(v + i), TOps.Load(output + i)));
            for (; i < d; i++) output[i] = MathF.FusedMultiplyAdd(weight, v[i], output[i]);
        }
    }

    /// <summary>Four consecutive keys' dot products with <paramref name="a"/>, each summed as <see cref="Dot"/> does.</summary>
    private static void Dot4(float* a, float* k, int d, float* result)
    {
        var c = TOps.Count;
        TV s0 = TOps.Zero, s1 = TOps.Zero, s2 = TOps.Zero, s3 = TOps.Zero;
        float* k1 = k + d, k2 = k + 2 * d, k3 = k + 3 * d;
        var i = 0;
        for (; i + c <= d; i += c)
        {
            var q = TOps.Load(a + i);
            s0 = TOps.MultiplyAdd(q, TOps.Load(k + i), s0);
            s1 = TOps.MultiplyAdd(q, TOps.Load(k1 + i), s1);
            s2 = TOps.MultiplyAdd(q, TOps.Load(k2 + i), s2);
            s3 = TOps.MultiplyAdd(q, TOps.Load(k3 + i), s3);
        }
        float r0 = TOps.Sum(s0), r1 = TOps.Sum(s1), r2 = TOps.Sum(s2), r3 = TOps.Sum(s3);
        for (; i < d; i++)
        {
            r0 = MathF.FusedMultiplyAdd(a[i], k[i], r0);
            r1 = MathF.FusedMultiplyAdd(a[i], k1[i], r1);
            r2 = MathF.FusedMultiplyAdd(a[i], k2[i], r2);
            r3 = MathF.FusedMultiplyAdd(a[i], k3[i], r3);
        }
        result[0] = r0;
        result[1] = r1;
        result[2] = r2;
        result[3] = r3;
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
