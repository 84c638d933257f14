using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;

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
/// Masked positions are skipped, so a row's result is the same whatever padding or spare positions it sits beside;
/// masked positions before a row's first attended one and after its last are not even read.
/// A row with no position to attend gives zeros, as LibTorch's scaled dot product does (2.5 and later; a test pins it).
/// The weighted sums are one fused multiply-add chain per element over the positions in order (the same bits in
/// every vector width); the dot products sum vector lanes, so widths agree to rounding.
/// </summary>
internal static unsafe class AttentionKernel<TOps, TV> where TOps : IVectorOps<TV> where TV : struct
{
    private const int StackPositions = 4096;

    /// <summary>How far ahead of the reads the prefetch walk runs, in bytes (measured: 1–8 KB do equally well here).</summary>
    private const long PrefetchDistance = 2048;

    /// <summary>Runs the attention: per row, every head's scores and softmax, then every head's weighted sum of values,
    /// so the row's keys and then its values are read as runs in a fixed order that a <see cref="PrefetchWalk"/>
    /// follows ahead of the reads. Each head's arithmetic is the same as alone.</summary>
    // Not zeroed: every slot is written before it is read (the exp pass's lanes past the last position never are).
    [SkipLocalsInit]
    public static void Run(in OneQueryAttention a)
    {
        var d = a.HeadDim;
        var group = a.Heads / a.KvHeads;
        var query = stackalloc float[d];
        var attended = stackalloc bool[a.Heads];
        // Each head's scores, with room for one vector past the last position (the exp pass runs over whole vectors).
        var room = a.Positions + TOps.Count;
        var need = (long)room * a.Heads;
        var rented = need <= StackPositions ? null : System.Buffers.ArrayPool<float>.Shared.Rent(checked((int)need)); // long sources
        Span<float> scores = rented ?? stackalloc float[(int)need];
        var walk = new PrefetchWalk(a);
        walk.Advance(PrefetchDistance);
        try
        {
            fixed (float* p = scores)
            {
                for (var b = 0; b < a.Batch; b++)
                {
                    // Only the row's window is read: padding before its first attended position and after its last
                    // (shorter sources beside longer ones, rows that joined a running batch) is never touched.
                    var (lo, positions) = Window(a.Mask == null ? null : a.Mask + b * a.MaskRow, a.Positions);
                    var mask = a.Mask == null ? null : a.Mask + b * a.MaskRow + lo;
                    var start = b * a.KvRow + (long)lo * d;
                    for (var h = 0; h < a.Heads; h++)
                    {
                        var ph = p + (long)h * room;
                        // A group's first head is the one that reads its keys and values from memory.
                        Scores(a.Queries + b * a.QueryRow + (long)h * d, a.Keys + start + h / group * a.KvHead,
                            positions, d, a.Scale, query, ph, ref walk, h % group == 0);
                        attended[h] = Softmax(ph, mask, positions);
                    }
                    for (var h = 0; h < a.Heads; h++)
                    {
                        var output = a.Output + ((long)b * a.Heads + h) * d;
                        var values = a.Values + start + h / group * a.KvHead;
                        var first = h % group == 0;
                        if (attended[h])
                        {
                            WeightedSum(p + (long)h * room, values, mask, positions, d, output, ref walk, first);
                            continue;
                        }
                        // No position to attend: zeros, as LibTorch gives.
                        new Span<float>(output, d).Clear();
                        if (first) walk.Advance((long)positions * d * sizeof(float));
                    }
                }
            }
        }
        finally
        {
            if (rented is not null) System.Buffers.ArrayPool<float>.Shared.Return(rented);
        }
    }

    /// <summary>The attended window of a mask row: its first attended position and the count up to its last one
    /// (every position without a mask; none when nothing is attended). Scores, weights and sums over the window are the
    /// same bits as over all positions: masked positions are never read.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (int First, int Count) Window(byte* mask, int positions)
    {
        if (mask == null) return (0, positions);
        var first = 0;
        while (first < positions && mask[first] == 0) first++;
        var end = positions;
        while (end > first && mask[end - 1] == 0) end--;
        return (first, end - first);
    }

    /// <summary>
    /// A walk over the key and value runs in the order <see cref="Run"/> reads them (per row: every key/value head's
    /// keys, then their values; each run <c>Positions × HeadDim</c> floats), prefetching each cache line once a fixed
    /// distance ahead of the reads. The runs are short and scattered (8 KB at 32 positions and head dim 64), and the
    /// hardware prefetcher alone ramps up again at each one: with the walk, attention at batch 16 reads as fast as a
    /// plain vector sum over the same runs does. x86 only (elsewhere <see cref="Advance"/> does nothing).
    /// </summary>
    private struct PrefetchWalk
    {
        private readonly float* _keys, _values;
        private readonly byte* _mask;
        private readonly long _kvRow, _kvHead, _maskRow;
        private readonly int _kvHeads, _runs, _positions, _headDim;
        private int _run, _windowRow, _first, _count;
        private byte* _at, _end;
        private long _budget;

        public PrefetchWalk(in OneQueryAttention a)
        {
            _keys = a.Keys;
            _values = a.Values;
            _mask = a.Mask;
            _maskRow = a.MaskRow;
            _kvRow = a.KvRow;
            _kvHead = a.KvHead;
            _kvHeads = a.KvHeads;
            _positions = a.Positions;
            _headDim = a.HeadDim;
            _runs = 2 * a.Batch * a.KvHeads;
            _run = -1;
            _windowRow = -1;
            _first = _count = 0;
            _at = _end = null;
            _budget = 0;
        }

        /// <summary>Moves the walk <paramref name="bytes"/> further, prefetching the whole lines it passes (the rest
        /// carries over to the next call).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Advance(long bytes)
        {
            if (!Sse.IsSupported) return;
            _budget += bytes;
            var lines = _budget >> 6;
            _budget &= 63;
            while (lines > 0)
            {
                if (_at >= _end && !NextRun()) return;
                var n = Math.Min(lines, (_end - _at + 63) >> 6);
                lines -= n;
                for (; n >= 4; n -= 4, _at += 256)
                {
                    Sse.Prefetch0(_at);
                    Sse.Prefetch0(_at + 64);
                    Sse.Prefetch0(_at + 128);
                    Sse.Prefetch0(_at + 192);
                }
                for (; n > 0; n--, _at += 64) Sse.Prefetch0(_at);
            }
        }

        private bool NextRun()
        {
            if (++_run >= _runs) return false;
            var row = _run / (2 * _kvHeads);
            if (row != _windowRow)
            {
                (_first, _count) = Window(_mask == null ? null : _mask + row * _maskRow, _positions);
                _windowRow = row;
            }
            var values = _run / _kvHeads % 2 == 1;
            _at = (byte*)((values ? _values : _keys) + row * _kvRow + _run % _kvHeads * _kvHead + (long)_first * _headDim);
            _end = _at + (long)_count * _headDim * sizeof(float);
            return true;
        }
    }

    /// <summary>One head's scores: the query times the scale, then its dot product with every position's key, eight
    /// then four keys at a time (independent chains; each key's sum is the same as alone). Masked positions are
    /// computed too; their results are never read. <paramref name="first"/>: the walk advances over these keys.</summary>
    private static void Scores(float* q, float* keys, int positions, int d, float scale, float* query, float* p,
        ref PrefetchWalk walk, bool first)
    {
        var c = TOps.Count;
        var s = TOps.Create(scale);
        var i = 0;
        for (; i + c <= d; i += c) TOps.Store(query + i, TOps.Multiply(TOps.Load(q + i), s));
        for (; i < d; i++) query[i] = q[i] * scale;
        long key = (long)d * sizeof(float);
        var j0 = 0;
        for (; j0 + 8 <= positions; j0 += 8)
        {
            if (first) walk.Advance(8 * key);
            Dot8(query, keys + (long)j0 * d, d, p + j0);
        }
        for (; j0 + 4 <= positions; j0 += 4)
        {
            if (first) walk.Advance(4 * key);
            Dot4(query, keys + (long)j0 * d, d, p + j0);
        }
        for (; j0 < positions; j0++)
        {
            if (first) walk.Advance(key);
            p[j0] = Dot(query, keys + (long)j0 * d, d);
        }
    }

    /// <summary>Scores to weights in place: minus the largest attended score, exp, divided by the attended positions'
    /// sum (added in position order). False when no position is attended.</summary>
    private static bool Softmax(float* p, byte* mask, int positions)
    {
        var max = float.NegativeInfinity;
        var any = false;
        for (var j = 0; j < positions; j++)
        {
            if (mask != null && mask[j] == 0) continue;
            max = any ? MathF.Max(max, p[j]) : p[j];
            any = true;
        }
        if (!any) return false;
        // exp(score − max) for every position, whole vectors (lanes past the last position and masked positions are
        // never read); the sum over the attended positions in order.
        var m = TOps.Create(max);
        for (var j = 0; j < positions; j += TOps.Count) TOps.Store(p + j, TOps.Exp(TOps.Subtract(TOps.Load(p + j), m)));
        var sum = 0f;
        for (var j = 0; j < positions; j++)
            if (mask == null || mask[j] != 0) sum += p[j];
        for (var j = 0; j < positions; j++)
            if (mask == null || mask[j] != 0) p[j] /= sum;
        return true;
    }

    /// <summary>output = Σ_j p_j · v_j, one fused multiply-add per element and position, positions in order, from zero:
    /// up to eight vectors of the output row at a time stay in registers over all positions. <paramref name="first"/>:
    /// the walk advances over these values, a position's share at a time.</summary>
    private static void WeightedSum(float* p, float* values, byte* mask, int positions, int d, float* output,
        ref PrefetchWalk walk, bool first)
    {
        var c = TOps.Count;
        var i = 0;
        for (; i + 8 * c <= d; i += 8 * c) WeightedSum8(p, values + i, mask, positions, d, output + i, ref walk, first ? 8 * c * sizeof(float) : 0);
        for (; i + 4 * c <= d; i += 4 * c) WeightedSum4(p, values + i, mask, positions, d, output + i, ref walk, first ? 4 * c * sizeof(float) : 0);
        if (first && i < d) walk.Advance((long)positions * (d - i) * sizeof(float));
        for (; i + c <= d; i += c) WeightedSum1(p, values + i, mask, positions, d, output + i);
        for (; i < d; i++)
        {
            var acc = 0f;
            for (var j = 0; j < positions; j++)
                if (mask == null || mask[j] != 0) acc = MathF.FusedMultiplyAdd(p[j], values[(long)j * d + i], acc);
            output[i] = acc;
        }
    }

    /// <summary>Eight output vectors at <paramref name="output"/>: <c>Σ_j p_j · v_j</c> over the attended positions in
    /// order, <paramref name="p"/> already divided by their sum (each element one fused multiply-add chain from zero,
    /// as in <see cref="WeightedSum1"/>).</summary>
    private static void WeightedSum8(float* p, float* v, byte* mask, int positions, int d, float* output, ref PrefetchWalk walk,
        long advance)
    {
        var c = TOps.Count;
        TV a0 = TOps.Zero, a1 = TOps.Zero, a2 = TOps.Zero, a3 = TOps.Zero, a4 = TOps.Zero, a5 = TOps.Zero, a6 = TOps.Zero, a7 = TOps.Zero;
        for (var j = 0; j < positions; j++, v += d)
        {
            if (advance != 0) walk.Advance(advance);
            if (mask != null && mask[j] == 0) continue;
            var w = TOps.Broadcast(p + j);
            a0 = TOps.MultiplyAdd(w, TOps.Load(v), a0);
            a1 = TOps.MultiplyAdd(w, TOps.Load(v + c), a1);
            a2 = TOps.MultiplyAdd(w, TOps.Load(v + 2 * c), a2);
            a3 = TOps.MultiplyAdd(w, TOps.Load(v + 3 * c), a3);
            a4 = TOps.MultiplyAdd(w, TOps.Load(v + 4 * c), a4);
            a5 = TOps.MultiplyAdd(w, TOps.Load(v + 5 * c), a5);
            a6 = TOps.MultiplyAdd(w, TOps.Load(v + 6 * c), a6);
            a7 = TOps.MultiplyAdd(w, TOps.Load(v + 7 * c), a7);
        }
        TOps.Store(output, a0);
        TOps.Store(output + c, a1);
        TOps.Store(output + 2 * c, a2);
        TOps.Store(output + 3 * c, a3);
        TOps.Store(output + 4 * c, a4);
        TOps.Store(output + 5 * c, a5);
        TOps.Store(output + 6 * c, a6);
        TOps.Store(output + 7 * c, a7);
    }

    /// <summary>Four output vectors, as <see cref="WeightedSum8"/>.</summary>
    private static void WeightedSum4(float* p, float* v, byte* mask, int positions, int d, float* output, ref PrefetchWalk walk,
        long advance)
    {
        var c = TOps.Count;
        TV a0 = TOps.Zero, a1 = TOps.Zero, a2 = TOps.Zero, a3 = TOps.Zero;
        for (var j = 0; j < positions; j++, v += d)
        {
            if (advance != 0) walk.Advance(advance);
            if (mask != null && mask[j] == 0) continue;
            var w = TOps.Broadcast(p + j);
            a0 = TOps.MultiplyAdd(w, TOps.Load(v), a0);
            a1 = TOps.MultiplyAdd(w, TOps.Load(v + c), a1);
            a2 = TOps.MultiplyAdd(w, TOps.Load(v + 2 * c), a2);
            a3 = TOps.MultiplyAdd(w, TOps.Load(v + 3 * c), a3);
        }
        TOps.Store(output, a0);
        TOps.Store(output + c, a1);
        TOps.Store(output + 2 * c, a2);
        TOps.Store(output + 3 * c, a3);
    }

    /// <summary>One output vector: <c>Σ_j p_j · v_j</c>, one fused multiply-add chain per element from zero.</summary>
    private static void WeightedSum1(float* p, float* v, byte* mask, int positions, int d, float* output)
    {
        var a = TOps.Zero;
        for (var j = 0; j < positions; j++, v += d)
            if (mask == null || mask[j] != 0) a = TOps.MultiplyAdd(TOps.Broadcast(p + j), TOps.Load(v), a);
        TOps.Store(output, a);
    }

    /// <summary>Eight consecutive keys' dot products with <paramref name="a"/>, each summed as <see cref="Dot"/> does
    /// (eight independent chains instead of four: the loop is bound by throughput, not by the chains' latency).</summary>
    private static void Dot8(float* a, float* k, int d, float* result)
    {
        var c = TOps.Count;
        TV s0 = TOps.Zero, s1 = TOps.Zero, s2 = TOps.Zero, s3 = TOps.Zero, s4 = TOps.Zero, s5 = TOps.Zero, s6 = TOps.Zero, s7 = TOps.Zero;
        float* k1 = k + d, k2 = k + 2 * d, k3 = k + 3 * d, k4 = k + 4 * d, k5 = k + 5 * d, k6 = k + 6 * d, k7 = k + 7 * d;
        var i = 0;
        for (; i + c <= d; i += c)
        {
            var q = TOps.Load(a + i);
            s0 = TOps.MultiplyAdd(q, TOps.Load(k + i), s0);
            s1 = TOps.MultiplyAdd(q, TOps.Load(k1 + i), s1);
            s2 = TOps.MultiplyAdd(q, TOps.Load(k2 + i), s2);
            s3 = TOps.MultiplyAdd(q, TOps.Load(k3 + i), s3);
            s4 = TOps.MultiplyAdd(q, TOps.Load(k4 + i), s4);
            s5 = TOps.MultiplyAdd(q, TOps.Load(k5 + i), s5);
            s6 = TOps.MultiplyAdd(q, TOps.Load(k6 + i), s6);
            s7 = TOps.MultiplyAdd(q, TOps.Load(k7 + i), s7);
        }
        float r0 = TOps.Sum(s0), r1 = TOps.Sum(s1), r2 = TOps.Sum(s2), r3 = TOps.Sum(s3);
        float r4 = TOps.Sum(s4), r5 = TOps.Sum(s5), r6 = TOps.Sum(s6), r7 = TOps.Sum(s7);
        for (; i < d; i++)
        {
            r0 = MathF.FusedMultiplyAdd(a[i], k[i], r0);
            r1 = MathF.FusedMultiplyAdd(a[i], k1[i], r1);
            r2 = MathF.FusedMultiplyAdd(a[i], k2[i], r2);
            r3 = MathF.FusedMultiplyAdd(a[i], k3[i], r3);
            r4 = MathF.FusedMultiplyAdd(a[i], k4[i], r4);
            r5 = MathF.FusedMultiplyAdd(a[i], k5[i], r5);
            r6 = MathF.FusedMultiplyAdd(a[i], k6[i], r6);
            r7 = MathF.FusedMultiplyAdd(a[i], k7[i], r7);
        }
        result[0] = r0;
        result[1] = r1;
        result[2] = r2;
        result[3] = r3;
        result[4] = r4;
        result[5] = r5;
        result[6] = r6;
        result[7] = r7;
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
