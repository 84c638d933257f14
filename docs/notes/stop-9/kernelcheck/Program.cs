using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TransformerInference.Modeling.Kernels;

unsafe
{
    Console.WriteLine($"{RuntimeInformation.FrameworkDescription} {RuntimeInformation.OSDescription} cores {Environment.ProcessorCount}");
    Console.WriteLine($"Vector512.IsHardwareAccelerated={Vector512.IsHardwareAccelerated} Avx512F={Avx512F.IsSupported} Avx512BW={Avx512BW.IsSupported} Avx10v1={Avx10v1.IsSupported} Avx512Vbmi={Avx512Vbmi.IsSupported} AvxVnni={AvxVnni.IsSupported} Avx2={Avx2.IsSupported} Fma={Fma.IsSupported}");
    var paths = new[] { "avx512", "avx2", "portable" };
    var formats = new[] { "f32", "i8", "bf16" };
    var rnd = new Random(7);
    float[] Rand(long count, float s) { var a = new float[count]; for (long i = 0; i < count; i++) a[i] = (float)(rnd.NextDouble() * 2 - 1) * s; return a; }
    int Width(string path) => path switch { "avx512" => 32, "avx2" => 16, _ => 8 };
    int Size(string f) => f == "f32" ? 4 : f == "i8" ? 1 : 2;
    ushort Bf16(float v) { var b = BitConverter.SingleToUInt32Bits(v); b += 0x7FFF + ((b >> 16) & 1); return (ushort)(b >> 16); }
    // Packs W [n, k] for a path and format; returns weights, padded scale (int8) and the dequantized weights.
    (IntPtr W, IntPtr Scale, float[] Deq) Pack(float[] w, int n, int k, string path, string f)
    {
        var width = Width(path); var panels = (n + width - 1) / width; long padded = (long)panels * width;
        var stored = f == "i8" ? (k + 1) / 2 * 2 : k; // int8: pairs of k
        var bytes = (nuint)(padded * stored * Size(f));
        var p = (byte*)NativeMemory.AlignedAlloc(bytes, 64); NativeMemory.Clear(p, bytes);
        float* scale = null; var deq = new float[(long)n * k];
        if (f == "i8") { scale = (float*)NativeMemory.AlignedAlloc((nuint)(padded * 4), 64); NativeMemory.Clear(scale, (nuint)(padded * 4)); }
        for (var r = 0; r < n; r++)
        {
            int panel = r / width, j = r % width; long index = (long)panel * k * width + j;
            float s = 0; if (f == "i8") { for (var c = 0; c < k; c++) s = Math.Max(s, Math.Abs(w[(long)r * k + c])); s = s == 0 ? 1 : s / 127; scale[r] = s; }
            for (var c = 0; c < k; c++)
            {
                var v = w[(long)r * k + c];
                switch (f)
                {
                    case "f32": ((float*)p)[index + (long)c * width] = v; deq[(long)r * k + c] = v; break;
                    case "i8": var q = (sbyte)Math.Clamp(Math.Round(v / s, MidpointRounding.ToEven), -127, 127); ((sbyte*)p + (long)panel * stored * width)[Int8PairWeights.Index(c, j, width)] = q; deq[(long)r * k + c] = q * s; break;
                    default: var h = Bf16(v); ((ushort*)p + (long)panel * k * width)[BFloat16Weights.Index(c, j, width)] = h; deq[(long)r * k + c] = BitConverter.UInt32BitsToSingle((uint)h << 16); break;
                }
            }
        }
        return ((IntPtr)p, (IntPtr)scale, deq);
    }
    // int8 rounds each row of x to int16 first (the library's rule, Int8PairWeights.QuantizeRows), then multiplies integers.
    void Run(string path, string f, float* x, float* y, long m, int k, int n, IntPtr w, IntPtr scale, float* bias)
    {
        var panels = (n + Width(path) - 1) / Width(path);
        var wp = (byte*)w; var sp = (float*)scale;
        var pairs = (k + 1) / 2;
        var q = f == "i8" ? new float[m * pairs + m] : null;
        fixed (float* qp = q)
        {
            if (f == "i8") Int8PairWeights.QuantizeRows(x, m, k, Int8PairWeights.ActivationLimit(k), (short*)qp, 2 * pairs, qp + m * pairs);
            var rs = qp + m * pairs;
            switch (path, f)
            {
                case ("avx512", "f32"): PackedKernel<Avx512Ops, Vector512<float>, Float32Weights>.Run(x, null, y, m, k, n, wp, sp, bias, 0, panels); break;
                case ("avx512", "i8"): PackedKernel<Avx512Ops, Vector512<float>, Int8PairWeights>.Run(qp, rs, y, m, pairs, n, wp, sp, bias, 0, panels); break;
                case ("avx512", "bf16"): PackedKernel<Avx512Ops, Vector512<float>, BFloat16Weights>.Run(x, null, y, m, k, n, wp, sp, bias, 0, panels); break;
                case ("avx2", "f32"): PackedKernel<Avx2Ops, Vector256<float>, Float32Weights>.Run(x, null, y, m, k, n, wp, sp, bias, 0, panels); break;
                case ("avx2", "i8"): PackedKernel<Avx2Ops, Vector256<float>, Int8PairWeights>.Run(qp, rs, y, m, pairs, n, wp, sp, bias, 0, panels); break;
                case ("avx2", "bf16"): PackedKernel<Avx2Ops, Vector256<float>, BFloat16Weights>.Run(x, null, y, m, k, n, wp, sp, bias, 0, panels); break;
                case ("portable", "f32"): PackedKernel<PortableOps, Vector128<float>, Float32Weights>.Run(x, null, y, m, k, n, wp, sp, bias, 0, panels); break;
                case ("portable", "i8"): PackedKernel<PortableOps, Vector128<float>, Int8PairWeights>.Run(qp, rs, y, m, pairs, n, wp, sp, bias, 0, panels); break;
                default: PackedKernel<PortableOps, Vector128<float>, BFloat16Weights>.Run(x, null, y, m, k, n, wp, sp, bias, 0, panels); break;
            }
        }
    }
    // 1. Products: every path gives the same bits; error against a float64 product of the stored weights.
    var failures = 0;
    foreach (var (n, k) in new[] { (45, 37), (512, 512), (256, 2048) })
    foreach (var f in formats)
    {
        var w = Rand((long)n * k, 0.05f);
        var packs = paths.ToDictionary(p => p, p => Pack(w, n, k, p, f));
        foreach (var m in new[] { 1, 2, 3, 5, 8, 9, 16, 70 })
        {
            var x = Rand((long)m * k, 1f);
            var outs = new Dictionary<string, float[]>();
            fixed (float* xp = x)
                foreach (var p in paths)
                {
                    var y = new float[(long)m * n];
                    fixed (float* yp = y) Run(p, f, xp, yp, m, k, n, packs[p].W, f == "i8" ? packs[p].Scale : IntPtr.Zero, null);
                    outs[p] = y;
                }
            var deq = packs["avx2"].Deq; double worst = 0;
            for (var r = 0; r < m; r++) for (var c = 0; c < n; c++)
            {
                double s = 0; for (var i = 0; i < k; i++) s += (double)x[(long)r * k + i] * deq[(long)c * k + i];
                worst = Math.Max(worst, Math.Abs(s - outs["avx512"][(long)r * n + c]));
            }
            var same = outs["avx512"].AsSpan().SequenceEqual(outs["avx2"]) && outs["avx2"].AsSpan().SequenceEqual(outs["portable"]);
            // a row alone gives the same bits as in the batch
            var alone = new float[n];
            fixed (float* xp = x) fixed (float* ap = alone) Run("avx512", f, xp + (long)(m - 1) * k, ap, 1, k, n, packs["avx512"].W, f == "i8" ? packs["avx512"].Scale : IntPtr.Zero, null);
            var rowSame = alone.AsSpan().SequenceEqual(outs["avx512"].AsSpan((m - 1) * n, n));
            if (!same || !rowSame || worst > 1e-3) failures++;
            if (m == 1 || m == 16 || !same || !rowSame) Console.WriteLine($"product {f} {n}x{k} rows {m}: paths bit-equal {same}, row alone = in batch {rowSame}, max |err| vs float64 {worst:E2}");
        }
    }
    // 2. One-query attention: paths agree (dots sum lanes in a width's order, so within rounding).
    foreach (var (d, positions) in new[] { (64, 19), (68, 70), (20, 11) })
    {
        const int batch = 4, heads = 8, kvHeads = 2;
        var q = Rand(batch * heads * d, 1); var keys = Rand((long)batch * kvHeads * positions * d, 1); var values = Rand((long)batch * kvHeads * positions * d, 1);
        var mask = new byte[batch * positions]; for (var i = 0; i < mask.Length; i++) mask[i] = (byte)((i % positions) == 3 && i / positions == 2 ? 0 : 1);
        var outs = new Dictionary<string, float[]>();
        fixed (float* qp = q) fixed (float* kp = keys) fixed (float* vp = values) fixed (byte* mp = mask)
            foreach (var p in paths)
            {
                var o = new float[batch * heads * d];
                fixed (float* op = o)
                {
                    var a = new OneQueryAttention { Queries = qp, QueryRow = heads * d, Keys = kp, Values = vp, KvRow = (long)kvHeads * positions * d, KvHead = (long)positions * d,
                        Mask = mp, MaskRow = positions, Output = op, Batch = batch, Heads = heads, KvHeads = kvHeads, HeadDim = d, Positions = positions, Scale = 1 / MathF.Sqrt(d) };
                    switch (p) { case "avx512": AttentionKernel<Avx512Ops, Vector512<float>>.Run(a); break; case "avx2": AttentionKernel<Avx2Ops, Vector256<float>>.Run(a); break; default: AttentionKernel<PortableOps, Vector128<float>>.Run(a); break; }
                }
                outs[p] = o;
            }
        var diff = paths.Skip(1).Max(p => outs[p].Zip(outs["avx512"], (u, v) => Math.Abs(u - v)).Max());
        if (diff > 1e-5) failures++;
        Console.WriteLine($"attention d {d} positions {positions}: largest difference between paths {diff:E2}");
    }
    Console.WriteLine($"correctness failures: {failures}");
    // 3. Speed: base-size products from memory (copies of the weight, >= 96 MB of float32 in all), alternated paths, medians.
    var timed = args.Length > 0 ? args[0].Split(',') : paths;
    // Warm-up: every kernel is called enough that tiered compilation has promoted it before anything is timed.
    {
        var w = Rand(256 * 256, 0.05f); var x = Rand(16 * 256, 1f); var y = new float[16 * 256];
        for (var round = 0; round < 3; round++)
        {
            foreach (var p in timed) foreach (var f in formats)
            {
                var pk = Pack(w, 256, 256, p, f);
                fixed (float* xp = x) fixed (float* yp = y)
                    foreach (var m in new[] { 1, 16 }) for (var c = 0; c < 200; c++) Run(p, f, xp, yp, m, 256, 256, pk.W, f == "i8" ? pk.Scale : IntPtr.Zero, null);
            }
            Thread.Sleep(200);
        }
    }
    Console.WriteLine("| product | format | rows | " + string.Join(" | ", timed.Select(p => p + " µs")) + " | " + string.Join(" | ", timed.Select(p => p + " GFLOP/s")) + " |");
    foreach (var (n, k) in new[] { (512, 512), (2048, 512), (512, 2048), (8000, 512) })
    foreach (var f in formats)
    {
        var copies = (int)Math.Max(2, 96L * 1024 * 1024 / (4L * n * k));
        var w = Rand((long)n * k, 0.05f);
        var sets = timed.ToDictionary(p => p, p => Enumerable.Range(0, copies).Select(_ => Pack(w, n, k, p, f)).ToArray());
        foreach (var m in new[] { 1, 16 })
        {
            var x = Rand((long)m * k, 1f); var y = new float[(long)m * n];
            var times = timed.ToDictionary(p => p, _ => new List<double>());
            var calls = (int)Math.Clamp(3e7 / ((double)n * k * Math.Max(1, m / 8.0)), 4, 2000);
            fixed (float* xp = x) fixed (float* yp = y)
                for (var run = -2; run < 7; run++)
                    foreach (var p in run % 2 == 0 ? timed : timed.Reverse())
                    {
                        var watch = Stopwatch.StartNew();
                        for (var c = 0; c < calls; c++) { var s = sets[p][c % copies]; Run(p, f, xp, yp, m, k, n, s.W, f == "i8" ? s.Scale : IntPtr.Zero, null); }
                        if (run >= 0) times[p].Add(watch.Elapsed.TotalMilliseconds * 1000 / calls);
                    }
            double Med(List<double> l) { l.Sort(); return l[l.Count / 2]; }
            var meds = timed.Select(p => Med(times[p])).ToArray();
            Console.WriteLine($"| {n}x{k} | {f} | {m} | " + string.Join(" | ", meds.Select(t => t.ToString("F1"))) + " | " + string.Join(" | ", meds.Select(t => (2.0 * n * k * m / t / 1e3).ToString("F1"))) + " |");
        }
        foreach (var s in sets.Values) foreach (var e in s) { NativeMemory.AlignedFree((void*)e.W); if (e.Scale != IntPtr.Zero) NativeMemory.AlignedFree((void*)e.Scale); }
    }
}
