using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace TransformerInference.Modeling.Kernels;

/// <summary>How packed weights are stored: one element type per struct, so the kernels specialise per format.</summary>
internal unsafe interface IWeightFormat
{
    /// <summary>Bytes per weight.</summary>
    static abstract int Size { get; }
    /// <summary>The <c>2·Count</c> weights of one panel row (one <c>k</c>; a pair of <c>k</c> for integer formats),
    /// widened to what the multiply-add takes (float, or int16 pairs): columns <c>[0, Count)</c> in
    /// <paramref name="lo"/>, <c>[Count, 2·Count)</c> in <paramref name="hi"/>.</summary>
    static abstract void LoadPair<TOps, TV>(byte* p, out TV lo, out TV hi) where TOps : IVectorOps<TV> where TV : struct;
    /// <summary>Integer products (<see cref="Int8PairWeights"/>): the activations are int16 pairs, the accumulators
    /// int32, and every output is scaled by its row's activation scale.</summary>
    static virtual bool Integer => false;
    /// <summary>One step of an output's chain: <c>acc + w·x</c> (one fused multiply-add for float weights).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static virtual TV MultiplyAdd<TOps, TV>(TV w, TV x, TV acc) where TOps : IVectorOps<TV> where TV : struct => TOps.MultiplyAdd(w, x, acc);
}

/// <summary>float32 weights: a panel row is the two vectors one after the other.</summary>
internal readonly unsafe struct Float32Weights : IWeightFormat
{
    public static int Size => 4;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadPair<TOps, TV>(byte* p, out TV lo, out TV hi) where TOps : IVectorOps<TV> where TV : struct
    {
        lo = TOps.Load((float*)p);
        hi = TOps.Load((float*)p + TOps.Count);
    }
}

/// <summary>
/// int8 weights multiplied as integers: a panel row is a pair of <c>k</c> (<c>2k</c>, <c>2k + 1</c>), and each 32-bit
/// lane holds one column's two weights, so <c>vpmaddwd</c> against a broadcast pair of int16 activations adds both
/// products to the column's int32 sum (<see cref="IVectorOps{TV}.MultiplyAddPairs"/>). Columns <c>[0, Count)</c>
/// come first (<c>2·Count</c> bytes), then <c>[Count, 2·Count)</c>. The sums are exact, so every path and every row
/// count gives the same bits.
/// </summary>
internal readonly unsafe struct Int8PairWeights : IWeightFormat
{
    public static int Size => 2;
    public static bool Integer => true;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadPair<TOps, TV>(byte* p, out TV lo, out TV hi) where TOps : IVectorOps<TV> where TV : struct
    {
        lo = TOps.LoadInt8AsInt16((sbyte*)p);
        hi = TOps.LoadInt8AsInt16((sbyte*)p + 2 * TOps.Count);
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV MultiplyAdd<TOps, TV>(TV w, TV x, TV acc) where TOps : IVectorOps<TV> where TV : struct =>
        TOps.MultiplyAddPairs(w, x, acc);

    /// <summary>Where weight <c>(k, j)</c> of a panel <paramref name="width"/> columns wide is stored, in bytes from
    /// the panel's start.</summary>
    public static long Index(long k, int j, int width)
    {
        var half = width / 2;
        return (k / 2) * 2 * width + j / half * width + j % half * 2 + k % 2;
    }

    /// <summary>The largest |int16| an activation is rounded to for a product over <paramref name="k"/> inputs: every
    /// int32 sum of <c>k</c> products with weights in [-127, 127] stays exact (<c>k · limit · 127 &lt; 2^31</c>). 32767 up to
    /// k = 516, 8256 at 2048, 4128 at 4096: the activations' rounding error (half a step of max|x| / limit) stays far
    /// below the weights' (half a step of max|w| / 127).</summary>
    internal static int ActivationLimit(int k) => (int)Math.Min(short.MaxValue, int.MaxValue / (127L * ((k + 1) / 2 * 2)));

    /// <summary>Rounds each row of <paramref name="x"/> (<c>m × k</c>) to int16 on its own symmetric grid:
    /// <c>q = round(x · limit / max|x|)</c> (half to even), written <paramref name="stride"/> int16 apart (a zero pads an
    /// odd <c>k</c>), with <c>rowScale = max|x| / limit</c> (0 for a zero or vanishingly small row, NaN for a row holding
    /// NaN or ±∞, so its outputs are NaN). One rule for every kernel path, so the paths agree bit for bit. 128-bit
    /// vectors: native on every path (Arm's NEON included, where 256-bit ones are emulated), and this pass is about
    /// 0.1 % of an int8 decode step, so wider vectors would buy nothing measurable.</summary>
    internal static void QuantizeRows(float* x, long m, int k, int limit, short* q, int stride, float* rowScale)
    {
        var c = Vector128<float>.Count;
        for (long r = 0; r < m; r++)
        {
            var row = x + r * k;
            var qr = q + r * stride;
            var vmax = Vector128<float>.Zero;
            var poison = Vector128<float>.Zero; // x · 0: NaN where x is NaN or ±∞
            var i = 0;
            for (; i + c <= k; i += c)
            {
                var v = Vector128.Load(row + i);
                vmax = Vector128.Max(vmax, Vector128.Abs(v));
                poison += v * Vector128<float>.Zero;
            }
            var top = Math.Max(Math.Max(vmax[0], vmax[1]), Math.Max(vmax[2], vmax[3]));
            var bad = float.IsNaN(Vector128.Sum(poison));
            for (; i < k; i++)
            {
                top = Math.Max(top, Math.Abs(row[i]));
                bad |= !float.IsFinite(row[i]);
            }
            // A row too small for its grid's step to be a float (max|x| below about 1e-34) counts as zero, as does an
            // all-zero row: its products are zero to far better than float32 resolution of anything beside them.
            var inverse = limit / top;
            if (bad || !float.IsFinite(inverse))
            {
                new Span<short>(qr, stride).Clear();
                rowScale[r] = bad ? float.NaN : 0;
                continue;
            }
            var vi = Vector128.Create(inverse);
            i = 0;
            for (; i + 2 * c <= k; i += 2 * c)
            {
                var a = Vector128.ConvertToInt32(Vector128.Round(Vector128.Load(row + i) * vi));
                var b = Vector128.ConvertToInt32(Vector128.Round(Vector128.Load(row + i + c) * vi));
                Vector128.Narrow(a, b).Store(qr + i);
            }
            for (; i < k; i++) qr[i] = (short)MathF.Round(row[i] * inverse, MidpointRounding.ToEven);
            for (; i < stride; i++) qr[i] = 0;
            rowScale[r] = top / limit;
        }
    }
}

/// <summary>bfloat16 weights, interleaved so one vector load and two cheap in-lane operations widen a panel row
/// exactly: 32-bit word <c>j</c> holds column <c>j</c> in its low half and column <c>j + Count</c> in its high half
/// (see <see cref="IVectorOps{TV}.LoadBFloat16Pair"/>).</summary>
internal readonly unsafe struct BFloat16Weights : IWeightFormat
{
    public static int Size => 2;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadPair<TOps, TV>(byte* p, out TV lo, out TV hi) where TOps : IVectorOps<TV> where TV : struct =>
        TOps.LoadBFloat16Pair((uint*)p, out lo, out hi);

    /// <summary>Where column <paramref name="j"/> (of a panel <paramref name="width"/> wide) of panel row
    /// <paramref name="k"/> is stored, in 16-bit elements from the panel's start.</summary>
    public static long Index(long k, int j, int width)
    {
        var half = width / 2;
        return (k * half + j % half) * 2 + j / half;
    }
}

/// <summary>
/// <c>y[m, n] = scale[n] · Σ_k x[m, k] · W[n, k] + bias[n]</c> on weights packed in panels of <c>2·Count</c> output
/// columns, each panel <c>k</c>-major (<c>panel[k][j]</c>), so a panel is one contiguous stream. Every float output
/// element is one fused multiply-add chain over <c>k</c> in order, and every integer one an exact int32 sum, whatever
/// the row count, the row's place in the batch or the vector width: a row's result does not depend on what it is
/// batched with, and all paths agree bit for bit.
/// Rows are taken in blocks of up to 64, so the weights are read from memory once per block (once per decode step).
/// </summary>
internal static unsafe class PackedKernel<TOps, TV, TFormat>
    where TOps : IVectorOps<TV> where TV : struct where TFormat : IWeightFormat
{
    private const int RowBlock = 64;

    /// <summary>Output columns per panel.</summary>
    public static int Width => 2 * TOps.Count;

    /// <summary>Runs the product for rows <c>[0, m)</c> of <paramref name="x"/> (<c>m × k</c>, row-major) into
    /// output columns of panels <c>[firstPanel, endPanel)</c> of <paramref name="y"/> (<c>m × n</c>).
    /// <paramref name="scale"/> and <paramref name="bias"/> are null or padded to whole panels. For
    /// <see cref="Int8PairWeights"/>, <paramref name="x"/> holds int16 activations (a 4-byte element is a pair of
    /// <c>k</c>, and <paramref name="k"/> counts pairs) and <paramref name="rowScale"/> each row's scale; otherwise
    /// <paramref name="rowScale"/> is null.</summary>
    public static void Run(float* x, float* rowScale, float* y, long m, int k, int n, byte* weights, float* scale, float* bias,
        int firstPanel, int endPanel)
    {
        var width = Width;
        var panels = endPanel;
        var fullPanels = Math.Min(endPanel, n / width);
        var panelBytes = (long)k * width * TFormat.Size;
        // The last, partial panel is stored through this buffer so nothing past a row is written. Allocated here:
        // a stackalloc inside the micro-kernels would stop the JIT inlining their stores (and spill accumulators).
        var scratch = stackalloc float[width];
        for (long r0 = 0; r0 < m; r0 += RowBlock)
        {
            var rows = (int)Math.Min(RowBlock, m - r0);
            // Where 32 vector registers hold 24 accumulators (AVX-512), twelve rows at a time first. Then six rows at a
            // time (twelve accumulators: more FMAs per weight loaded), except that the last seven or eight
            // go as 4 + 3 or 4 + 4 rather than 6 + 1 (+ 1); then four at a time; two or three left go in one three-row
            // pass (six chains instead of two per row: the one-row kernel waits on its two chains' latency), the third
            // row repeating the second when two are left (same bits, written twice); one left goes alone.
            var twelves = 0;
            if (TOps.Registers >= 32)
                for (var left = rows; left >= 12; left -= 12) twelves++;
            var sixes = 0;
            for (var left = rows - 12 * twelves; left >= 6 && left is not (7 or 8); left -= 6) sixes++;
            var xb = x + r0 * k;
            var yb = y + r0 * n;
            var rs = TFormat.Integer ? rowScale + r0 : null;
            var p = firstPanel;
            if (rows < 4)
            {
                // Few rows: four panels at once give eight independent chains per row.
                for (; p + 4 <= fullPanels; p += 4)
                    for (var r = 0; r < rows; r++)
                        Row1Panel4(xb + (long)r * k, k, weights + p * panelBytes, panelBytes, yb + (long)r * n + p * width,
                            Offset(scale, p * width), Offset(bias, p * width), RowScale(rs, r));
            }
            for (; p < panels; p++)
            {
                var panel = weights + p * panelBytes;
                var columns = Math.Min(width, n - p * width);
                var s = Offset(scale, p * width);
                var b = Offset(bias, p * width);
                var r = 0;
                // 32 vector registers (AVX-512): twelve rows at a time, and during the first such pass the next panel is
                // prefetched into L2 (every format), so every pass reads its panel from cache and the stream from
                // memory runs beside the arithmetic. At 16 rows this took 0.69-0.75x the time of the six-row plan in
                // float32, 0.83-0.90x in int8 (one thread, Zen 5).
                for (var pass = 0; pass < twelves; pass++, r += 12)
                    Rows12(xb + (long)r * k, k, panel, yb + (long)r * n + p * width, n, columns, s, b, scratch,
                        pass == 0 && p + 1 < panels ? panel + panelBytes : null, Offset(rs, r));
                // float32 only: during the second six-row pass (the first when there is one), the next panel is
                // prefetched into L2, one line per k step, so the next panel's first pass does not wait on memory (a
                // float32 panel is read at 64 B per k step, more than memory gives one core; int8 and bf16 are not).
                var prefetchPass = TFormat.Size == 4 && Sse.IsSupported && p + 1 < panels ? Math.Min(1, sixes - 1) : -1;
                if (twelves > 0) prefetchPass = -1;
                for (var pass = 0; pass < sixes; pass++, r += 6)
                    Rows6(xb + (long)r * k, k, panel, yb + (long)r * n + p * width, n, columns, s, b, scratch,
                        pass == prefetchPass ? panel + panelBytes : null, Offset(rs, r));
                for (; r + 4 <= rows; r += 4)
                    Rows4(xb + (long)r * k, k, panel, yb + (long)r * n + p * width, n, columns, s, b, scratch, Offset(rs, r));
                if (rows - r >= 2)
                {
                    var y0 = yb + p * width;
                    Rows3(xb + (long)r * k, xb + (long)(r + 1) * k, xb + (long)(rows - 1) * k, k, panel,
                        y0 + (long)r * n, y0 + (long)(r + 1) * n, y0 + (long)(rows - 1) * n, columns, s, b, scratch,
                        RowScale(rs, r), RowScale(rs, r + 1), RowScale(rs, rows - 1));
                    r = rows;
                }
                for (; r < rows; r++)
                    Row1(xb + (long)r * k, k, panel, yb + (long)r * n + p * width, columns, s, b, scratch, RowScale(rs, r));
            }
        }
    }

    /// <summary>Row <paramref name="i"/>'s activation scale (integer formats; 1 otherwise).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float RowScale(float* rowScale, int i) => TFormat.Integer ? rowScale[i] : 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float* Offset(float* p, long by) => p == null ? null : p + by;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TV Finish(TV acc, float* scale, float* bias, float rowScale)
    {
        // Integer sums: to float (exact up to 2^24, then rounded to nearest even), times the row's activation scale.
        if (TFormat.Integer) acc = TOps.Multiply(TOps.Int32ToSingle(acc), TOps.Create(rowScale));
        if (scale != null) acc = TOps.Multiply(acc, TOps.Load(scale));
        if (bias != null) acc = TOps.Add(acc, TOps.Load(bias));
        return acc;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(float* y, int columns, TV lo, TV hi, float* scale, float* bias, float* scratch, float rowScale)
    {
        var c = TOps.Count;
        lo = Finish(lo, scale, bias, rowScale);
        hi = Finish(hi, scale == null ? null : scale + c, bias == null ? null : bias + c, rowScale);
        if (columns == 2 * c)
        {
            TOps.Store(y, lo);
            TOps.Store(y + c, hi);
            return;
        }
        TOps.Store(scratch, lo);
        TOps.Store(scratch + c, hi);
        for (var j = 0; j < columns; j++) y[j] = scratch[j];
    }

    /// <summary>Prefetches one panel row of the next panel into L2 (both cache lines of a 128-byte float32 row on the
    /// 512-bit path) and returns the next row's address. Null stays null: no prefetch asked for, or a CPU without
    /// x86's prefetch instructions (the 512-bit path can be forced where it is emulated).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static byte* PrefetchRow(byte* prefetch, int step)
    {
        if (!Sse.IsSupported || prefetch == null) return null;
        Sse.Prefetch1(prefetch);
        if (step > 64) Sse.Prefetch1(prefetch + 64);
        return prefetch + step;
    }

    /// <summary>Six rows against one panel: as <see cref="Rows4"/> with twelve chains, so the panel's first pass (the
    /// one that reads it from memory) asks for fewer bytes per cycle and the FMA units have more independent work.
    /// <paramref name="prefetch"/>: null, or a panel of the same size to prefetch into L2 meanwhile.</summary>
    private static void Rows6(float* x, int k, byte* w, float* y, int n, int columns, float* scale, float* bias, float* scratch,
        byte* prefetch, float* rowScale)
    {
        var c = TOps.Count;
        var step = 2 * c * TFormat.Size;
        TV a0 = TOps.Zero, b0 = TOps.Zero, a1 = TOps.Zero, b1 = TOps.Zero, a2 = TOps.Zero, b2 = TOps.Zero;
        TV a3 = TOps.Zero, b3 = TOps.Zero, a4 = TOps.Zero, b4 = TOps.Zero, a5 = TOps.Zero, b5 = TOps.Zero;
        float* x0 = x, x1 = x + k, x2 = x + 2 * k, x3 = x + 3 * k, x4 = x + 4 * k, x5 = x + 5 * k;
        for (var i = 0; i < k; i++, w += step)
        {
            prefetch = PrefetchRow(prefetch, step);
            TFormat.LoadPair<TOps, TV>(w, out var lo, out var hi);
            var v = TOps.Broadcast(x0 + i);
            a0 = TFormat.MultiplyAdd<TOps, TV>(lo, v, a0);
            b0 = TFormat.MultiplyAdd<TOps, TV>(hi, v, b0);
            v = TOps.Broadcast(x1 + i);
            a1 = TFormat.MultiplyAdd<TOps, TV>(lo, v, a1);
            b1 = TFormat.MultiplyAdd<TOps, TV>(hi, v, b1);
            v = TOps.Broadcast(x2 + i);
            a2 = TFormat.MultiplyAdd<TOps, TV>(lo, v, a2);
            b2 = TFormat.MultiplyAdd<TOps, TV>(hi, v, b2);
            v = TOps.Broadcast(x3 + i);
            a3 = TFormat.MultiplyAdd<TOps, TV>(lo, v, a3);
            b3 = TFormat.MultiplyAdd<TOps, TV>(hi, v, b3);
            v = TOps.Broadcast(x4 + i);
            a4 = TFormat.MultiplyAdd<TOps, TV>(lo, v, a4);
            b4 = TFormat.MultiplyAdd<TOps, TV>(hi, v, b4);
            v = TOps.Broadcast(x5 + i);
            a5 = TFormat.MultiplyAdd<TOps, TV>(lo, v, a5);
            b5 = TFormat.MultiplyAdd<TOps, TV>(hi, v, b5);
        }
        Store(y, columns, a0, b0, scale, bias, scratch, RowScale(rowScale, 0));
        Store(y + n, columns, a1, b1, scale, bias, scratch, RowScale(rowScale, 1));
        Store(y + 2 * n, columns, a2, b2, scale, bias, scratch, RowScale(rowScale, 2));
        Store(y + 3 * n, columns, a3, b3, scale, bias, scratch, RowScale(rowScale, 3));
        Store(y + 4 * n, columns, a4, b4, scale, bias, scratch, RowScale(rowScale, 4));
        Store(y + 5 * n, columns, a5, b5, scale, bias, scratch, RowScale(rowScale, 5));
    }

    /// <summary>Twelve rows against one panel, 24 chains: only where 32 vector registers hold them (512-bit path).</summary>
    private static void Rows12(float* x, int k, byte* w, float* y, int n, int columns, float* scale, float* bias, float* scratch,
        byte* prefetch, float* rowScale)
    {
        var c = TOps.Count;
        var step = 2 * c * TFormat.Size;
        TV a0 = TOps.Zero, b0 = TOps.Zero, a1 = TOps.Zero, b1 = TOps.Zero, a2 = TOps.Zero, b2 = TOps.Zero;
        TV a3 = TOps.Zero, b3 = TOps.Zero, a4 = TOps.Zero, b4 = TOps.Zero, a5 = TOps.Zero, b5 = TOps.Zero;
        TV a6 = TOps.Zero, b6 = TOps.Zero, a7 = TOps.Zero, b7 = TOps.Zero, a8 = TOps.Zero, b8 = TOps.Zero;
        TV a9 = TOps.Zero, b9 = TOps.Zero, a10 = TOps.Zero, b10 = TOps.Zero, a11 = TOps.Zero, b11 = TOps.Zero;
        for (var i = 0; i < k; i++, w += step)
        {
            prefetch = PrefetchRow(prefetch, step);
            TFormat.LoadPair<TOps, TV>(w, out var lo, out var hi);
            var xi = x + i;
            var v0 = TOps.Broadcast(xi);
            a0 = TFormat.MultiplyAdd<TOps, TV>(lo, v0, a0);
            b0 = TFormat.MultiplyAdd<TOps, TV>(hi, v0, b0);
            var v1 = TOps.Broadcast(xi + 1 * k);
            a1 = TFormat.MultiplyAdd<TOps, TV>(lo, v1, a1);
            b1 = TFormat.MultiplyAdd<TOps, TV>(hi, v1, b1);
            var v2 = TOps.Broadcast(xi + 2 * k);
            a2 = TFormat.MultiplyAdd<TOps, TV>(lo, v2, a2);
            b2 = TFormat.MultiplyAdd<TOps, TV>(hi, v2, b2);
            var v3 = TOps.Broadcast(xi + 3 * k);
            a3 = TFormat.MultiplyAdd<TOps, TV>(lo, v3, a3);
            b3 = TFormat.MultiplyAdd<TOps, TV>(hi, v3, b3);
            var v4 = TOps.Broadcast(xi + 4 * k);
            a4 = TFormat.MultiplyAdd<TOps, TV>(lo, v4, a4);
            b4 = TFormat.MultiplyAdd<TOps, TV>(hi, v4, b4);
            var v5 = TOps.Broadcast(xi + 5 * k);
            a5 = TFormat.MultiplyAdd<TOps, TV>(lo, v5, a5);
            b5 = TFormat.MultiplyAdd<TOps, TV>(hi, v5, b5);
            var v6 = TOps.Broadcast(xi + 6 * k);
            a6 = TFormat.MultiplyAdd<TOps, TV>(lo, v6, a6);
            b6 = TFormat.MultiplyAdd<TOps, TV>(hi, v6, b6);
            var v7 = TOps.Broadcast(xi + 7 * k);
            a7 = TFormat.MultiplyAdd<TOps, TV>(lo, v7, a7);
            b7 = TFormat.MultiplyAdd<TOps, TV>(hi, v7, b7);
            var v8 = TOps.Broadcast(xi + 8 * k);
            a8 = TFormat.MultiplyAdd<TOps, TV>(lo, v8, a8);
            b8 = TFormat.MultiplyAdd<TOps, TV>(hi, v8, b8);
            var v9 = TOps.Broadcast(xi + 9 * k);
            a9 = TFormat.MultiplyAdd<TOps, TV>(lo, v9, a9);
            b9 = TFormat.MultiplyAdd<TOps, TV>(hi, v9, b9);
            var v10 = TOps.Broadcast(xi + 10 * k);
            a10 = TFormat.MultiplyAdd<TOps, TV>(lo, v10, a10);
            b10 = TFormat.MultiplyAdd<TOps, TV>(hi, v10, b10);
            var v11 = TOps.Broadcast(xi + 11 * k);
            a11 = TFormat.MultiplyAdd<TOps, TV>(lo, v11, a11);
            b11 = TFormat.MultiplyAdd<TOps, TV>(hi, v11, b11);
        }
        Store(y, columns, a0, b0, scale, bias, scratch, RowScale(rowScale, 0));
        Store(y + n, columns, a1, b1, scale, bias, scratch, RowScale(rowScale, 1));
        Store(y + 2 * n, columns, a2, b2, scale, bias, scratch, RowScale(rowScale, 2));
        Store(y + 3 * n, columns, a3, b3, scale, bias, scratch, RowScale(rowScale, 3));
        Store(y + 4 * n, columns, a4, b4, scale, bias, scratch, RowScale(rowScale, 4));
        Store(y + 5 * n, columns, a5, b5, scale, bias, scratch, RowScale(rowScale, 5));
        Store(y + 6 * n, columns, a6, b6, scale, bias, scratch, RowScale(rowScale, 6));
        Store(y + 7 * n, columns, a7, b7, scale, bias, scratch, RowScale(rowScale, 7));
        Store(y + 8 * n, columns, a8, b8, scale, bias, scratch, RowScale(rowScale, 8));
        Store(y + 9 * n, columns, a9, b9, scale, bias, scratch, RowScale(rowScale, 9));
        Store(y + 10 * n, columns, a10, b10, scale, bias, scratch, RowScale(rowScale, 10));
        Store(y + 11 * n, columns, a11, b11, scale, bias, scratch, RowScale(rowScale, 11));
    }

    private static void Rows4(float* x, int k, byte* w, float* y, int n, int columns, float* scale, float* bias, float* scratch,
        float* rowScale)
    {
        var c = TOps.Count;
        var step = 2 * c * TFormat.Size;
        TV a0 = TOps.Zero, b0 = TOps.Zero, a1 = TOps.Zero, b1 = TOps.Zero;
        TV a2 = TOps.Zero, b2 = TOps.Zero, a3 = TOps.Zero, b3 = TOps.Zero;
        float* x0 = x, x1 = x + k, x2 = x + 2 * k, x3 = x + 3 * k;
        for (var i = 0; i < k; i++, w += step)
        {
            TFormat.LoadPair<TOps, TV>(w, out var lo, out var hi);
            var v = TOps.Broadcast(x0 + i);
            a0 = TFormat.MultiplyAdd<TOps, TV>(lo, v, a0);
            b0 = TFormat.MultiplyAdd<TOps, TV>(hi, v, b0);
            v = TOps.Broadcast(x1 + i);
            a1 = TFormat.MultiplyAdd<TOps, TV>(lo, v, a1);
            b1 = TFormat.MultiplyAdd<TOps, TV>(hi, v, b1);
            v = TOps.Broadcast(x2 + i);
            a2 = TFormat.MultiplyAdd<TOps, TV>(lo, v, a2);
            b2 = TFormat.MultiplyAdd<TOps, TV>(hi, v, b2);
            v = TOps.Broadcast(x3 + i);
            a3 = TFormat.MultiplyAdd<TOps, TV>(lo, v, a3);
            b3 = TFormat.MultiplyAdd<TOps, TV>(hi, v, b3);
        }
        Store(y, columns, a0, b0, scale, bias, scratch, RowScale(rowScale, 0));
        Store(y + n, columns, a1, b1, scale, bias, scratch, RowScale(rowScale, 1));
        Store(y + 2 * n, columns, a2, b2, scale, bias, scratch, RowScale(rowScale, 2));
        Store(y + 3 * n, columns, a3, b3, scale, bias, scratch, RowScale(rowScale, 3));
    }

    /// <summary>Three rows (any three: each has its own input and output row) against one panel, six chains.</summary>
    private static void Rows3(float* x0, float* x1, float* x2, int k, byte* w, float* y0, float* y1, float* y2, int columns,
        float* scale, float* bias, float* scratch, float s0, float s1, float s2)
    {
        var c = TOps.Count;
        var step = 2 * c * TFormat.Size;
        TV a0 = TOps.Zero, b0 = TOps.Zero, a1 = TOps.Zero, b1 = TOps.Zero, a2 = TOps.Zero, b2 = TOps.Zero;
        for (var i = 0; i < k; i++, w += step)
        {
            TFormat.LoadPair<TOps, TV>(w, out var lo, out var hi);
            var v = TOps.Broadcast(x0 + i);
            a0 = TFormat.MultiplyAdd<TOps, TV>(lo, v, a0);
            b0 = TFormat.MultiplyAdd<TOps, TV>(hi, v, b0);
            v = TOps.Broadcast(x1 + i);
            a1 = TFormat.MultiplyAdd<TOps, TV>(lo, v, a1);
            b1 = TFormat.MultiplyAdd<TOps, TV>(hi, v, b1);
            v = TOps.Broadcast(x2 + i);
            a2 = TFormat.MultiplyAdd<TOps, TV>(lo, v, a2);
            b2 = TFormat.MultiplyAdd<TOps, TV>(hi, v, b2);
        }
        Store(y0, columns, a0, b0, scale, bias, scratch, s0);
        Store(y1, columns, a1, b1, scale, bias, scratch, s1);
        Store(y2, columns, a2, b2, scale, bias, scratch, s2);
    }

    private static void Row1(float* x, int k, byte* w, float* y, int columns, float* scale, float* bias, float* scratch, float rowScale)
    {
        var c = TOps.Count;
        var step = 2 * c * TFormat.Size;
        TV a = TOps.Zero, b = TOps.Zero;
        for (var i = 0; i < k; i++, w += step)
        {
            TFormat.LoadPair<TOps, TV>(w, out var lo, out var hi);
            var v = TOps.Broadcast(x + i);
            a = TFormat.MultiplyAdd<TOps, TV>(lo, v, a);
            b = TFormat.MultiplyAdd<TOps, TV>(hi, v, b);
        }
        Store(y, columns, a, b, scale, bias, scratch, rowScale);
    }

    /// <summary>One row against four consecutive full panels (one offset walks the four panel streams).</summary>
    private static void Row1Panel4(float* x, int k, byte* w, long panelBytes, float* y, float* scale, float* bias, float rowScale)
    {
        var c = TOps.Count;
        var step = 2 * c * TFormat.Size;
        TV a0 = TOps.Zero, b0 = TOps.Zero, a1 = TOps.Zero, b1 = TOps.Zero;
        TV a2 = TOps.Zero, b2 = TOps.Zero, a3 = TOps.Zero, b3 = TOps.Zero;
        byte* w0 = w, w1 = w + panelBytes, w2 = w + 2 * panelBytes, w3 = w + 3 * panelBytes;
        var end = x + k;
        for (nint o = 0; x < end; x++, o += step)
        {
            var v = TOps.Broadcast(x);
            TFormat.LoadPair<TOps, TV>(w0 + o, out var lo, out var hi);
            a0 = TFormat.MultiplyAdd<TOps, TV>(lo, v, a0);
            b0 = TFormat.MultiplyAdd<TOps, TV>(hi, v, b0);
            TFormat.LoadPair<TOps, TV>(w1 + o, out lo, out hi);
            a1 = TFormat.MultiplyAdd<TOps, TV>(lo, v, a1);
            b1 = TFormat.MultiplyAdd<TOps, TV>(hi, v, b1);
            TFormat.LoadPair<TOps, TV>(w2 + o, out lo, out hi);
            a2 = TFormat.MultiplyAdd<TOps, TV>(lo, v, a2);
            b2 = TFormat.MultiplyAdd<TOps, TV>(hi, v, b2);
            TFormat.LoadPair<TOps, TV>(w3 + o, out lo, out hi);
            a3 = TFormat.MultiplyAdd<TOps, TV>(lo, v, a3);
            b3 = TFormat.MultiplyAdd<TOps, TV>(hi, v, b3);
        }
        var width = 2 * c;
        Store(y, width, a0, b0, scale, bias, null, rowScale);
        Store(y + width, width, a1, b1, Offset(scale, width), Offset(bias, width), null, rowScale);
        Store(y + 2 * width, width, a2, b2, Offset(scale, 2 * width), Offset(bias, 2 * width), null, rowScale);
        Store(y + 3 * width, width, a3, b3, Offset(scale, 3 * width), Offset(bias, 3 * width), null, rowScale);
    }
}
