using System.Diagnostics;
using System.Globalization;
using TransformerInference.Modeling.Kernels;
using static TorchSharp.torch;

namespace TransformerInference.Samples.Benchmark;

internal static partial class Modes
{
    /// <summary>One weight product at a time, the products of a base-size decode step (attention 512×512, FFN
    /// 512→2048 and 2048→512, output projection 512→8000 for the base shape), for 1, 16 and 512 rows: LibTorch
    /// vs our float32, int8 and bfloat16 kernels, runs alternated between kernels, medians. Each kernel cycles over
    /// enough copies of the weight (≥ 96 MB of float32) that they are read from memory, as in a decode step.</summary>
    public static unsafe void Products(Options o)
    {
        var config = RandomModel.Shape(o.Shape);
        var d = config.DModel;
        var shapes = new (string Name, int Out, int In)[]
        {
            ("attention", d, d), ("ffn in", config.DFF, d), ("ffn out", d, config.DFF), ("projection", config.TargetVocabSize, d),
        };
        var best = LinearKernels.Best();
        var kernels = new (string Name, CpuKernel? Cpu, PackedFormat Format)[]
        {
            ("LibTorch float32", null, PackedFormat.Float32),
            ($"ours float32 ({best})", best, PackedFormat.Float32),
            ($"ours int8 ({best})", best, PackedFormat.Int8),
            ($"ours bf16 ({best})", best, PackedFormat.BFloat16),
        }.Concat(o.AllKernels && best == CpuKernel.Avx512
            ? new (string Name, CpuKernel? Cpu, PackedFormat Format)[]
            {
                ("ours float32 (avx2)", CpuKernel.Avx2, PackedFormat.Float32),
                ("ours int8 (avx2)", CpuKernel.Avx2, PackedFormat.Int8),
                ("ours bf16 (avx2)", CpuKernel.Avx2, PackedFormat.BFloat16),
            }
            : []).ToArray();
        var rowCounts = new[] { 1, 16, 512 };
        WarmUp(kernels.Select(k => (k.Cpu, k.Format)).ToArray(), rowCounts);
        var rows = new List<string[]>();
        foreach (var (name, outFeatures, inFeatures) in shapes)
        {
            var copies = (int)Math.Max(1, 96L * 1024 * 1024 / (4L * outFeatures * inFeatures));
            manual_seed(outFeatures + inFeatures);
            var linears = kernels.Select(kernel => Enumerable.Range(0, copies).Select(_ =>
            {
                var weight = randn(outFeatures, inFeatures) * 0.05;
                var bias = randn(outFeatures) * 0.05;
                return kernel.Cpu is { } cpu ? (LinearWeight)new PackedLinear(weight, bias, cpu, kernel.Format) : new TorchLinear(weight, bias);
            }).ToArray()).ToArray();
            try
            {
                foreach (var m in rowCounts)
                {
                    using var scope = NewDisposeScope();
                    var x = randn(m, inFeatures);
                    // Enough calls per timed run that it lasts ~20 ms on the float32 kernel's scale.
                    var calls = (int)Math.Clamp(5e6 / ((double)outFeatures * inFeatures * Math.Max(1, m / 8.0)), 4, 4000);
                    var times = kernels.Select(_ => new List<double>()).ToArray();
                    // Warm-up (run -1): every copy touched, and enough calls that the JIT has promoted the kernels.
                    for (var run = -1; run < o.Runs; run++)
                    {
                        for (var j = 0; j < kernels.Length; j++)
                        {
                            var e = run % 2 == 0 ? j : kernels.Length - 1 - j;
                            var set = linears[e];
                            var watch = Stopwatch.StartNew();
                            var count = run < 0 ? Math.Max(calls, 2 * copies + 100) : calls;
                            for (var c = 0; c < count; c++) set[c % copies].Forward(x).Dispose();
                            if (run >= 0) times[e].Add(watch.Elapsed.TotalMilliseconds * 1000 / count);
                        }
                    }
                    var baseline = Timing.Median(times[1]);
                    for (var e = 0; e < kernels.Length; e++)
                    {
                        var us = Timing.Median(times[e]);
                        var bytes = (double)outFeatures * inFeatures * (kernels[e].Format switch { PackedFormat.Int8 => 1, PackedFormat.BFloat16 => 2, _ => 4 });
                        rows.Add(new[]
                        {
                            $"{name} {outFeatures}×{inFeatures}", kernels[e].Name, m.ToString(CultureInfo.InvariantCulture),
                            us.ToString("F1", CultureInfo.InvariantCulture), Table.Ratio(us / baseline),
                            (bytes / us / 1e3).ToString("F1", CultureInfo.InvariantCulture),
                            (2.0 * outFeatures * inFeatures * m / us / 1e3).ToString("F1", CultureInfo.InvariantCulture),
                        });
                    }
                }
            }
            finally
            {
                foreach (var set in linears) foreach (var l in set) l.Dispose();
            }
        }
        Table.Print(new[] { "product (out×in)", "kernel", "rows", "µs/call", "time × ours float32", "weight GB/s", "GFLOP/s" }, rows, textColumns: 2);
        Console.WriteLine();
        Console.WriteLine($"{o.Shape} shape; every call reads one of several copies of the weight (≥ 96 MB of float32 in all), so weights come from memory.");
    }

    /// <summary>Runs every kernel on a small product until the JIT has compiled its optimised code (tiered
    /// compilation promotes a method some 100 ms after its first calls), so the first timed shape is not slower.</summary>
    private static void WarmUp((CpuKernel? Cpu, PackedFormat Format)[] kernels, int[] rowCounts)
    {
        using var scope = NewDisposeScope();
        var linears = kernels.Select(k => k.Cpu is { } cpu
            ? (LinearWeight)new PackedLinear(randn(256, 256), randn(256), cpu, k.Format) : new TorchLinear(randn(256, 256), randn(256))).ToArray();
        try
        {
            for (var round = 0; round < 4; round++)
            {
                foreach (var m in rowCounts)
                {
                    var x = randn(m, 256);
                    foreach (var l in linears) for (var c = 0; c < 50; c++) l.Forward(x).Dispose();
                }
                Thread.Sleep(250);
            }
        }
        finally
        {
            foreach (var l in linears) l.Dispose();
        }
    }
}
