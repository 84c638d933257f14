using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using TransformerInference.Modeling;
using static TorchSharp.torch;

namespace TransformerInference.Samples.Benchmark;

internal static partial class Modes
{
    /// <summary>The machine's limits, measured here with one thread: read bandwidth (a vector sum over 512 MiB)
    /// and float32 matmul peak (LibTorch 1024³); then our decode step at batch 1 as % of the bandwidth bound (weights
    /// read per step ÷ time) and at batch 16 as % of the matmul peak (weight FLOPs per step ÷ time).</summary>
    public static unsafe void Limits(Options o)
    {
        var bandwidth = ReadBandwidth(o.Runs);
        var peak = MatmulPeak(o.Runs);
        Report.Figures["readGBps"] = bandwidth;
        Report.Figures["fp32MatmulGflops"] = peak;
        Console.WriteLine($"read bandwidth {bandwidth:F1} GB/s, float32 matmul peak {peak:F1} GFLOP/s (1 thread, medians)");
        Console.WriteLine();

        var config = RandomModel.Shape(o.Shape);
        // Weights a decode step reads: decoder self-attention (q, k, v, o), cross-attention q and o (its k/v are
        // computed once per source), feed-forward, and the output projection.
        long d = config.DModel, kv = (long)config.EffectiveKvHeads * config.HeadDim;
        var perLayer = 2 * d * d + 2 * d * kv + 2 * d * d + 2 * d * config.DFF;
        var parameters = config.DecoderLayers * perLayer + (long)config.TargetVocabSize * d;
        var rows = new List<string[]>();
        foreach (var e in Engines(o).Where(e => e.DType == ScalarType.Float32))
        {
            using var model = Load(config, e);
            var bytesPerWeight = e.Quantization switch { WeightQuantization.Int8 => 1, WeightQuantization.BFloat16 => 2, _ => 4 };
            foreach (var batch in new[] { 1, 16 })
            {
                using var scope = NewDisposeScope();
                var data = Enumerable.Range(0, batch).SelectMany(b => RandomModel.Source(config, 32, seed: 7 + b)).Select(i => (long)i).ToArray();
                var sources = tensor(data, new long[] { batch, 32 });
                var runs = Timing.Repeat(o.Runs, () => LeverRun(model, sources, 64, 32));
                var step = Timing.Median(runs.Select(r => r.StepMs).ToList());
                var prefill = Timing.Median(runs.Select(r => r.PrefillMs).ToList());
                var gbps = parameters * bytesPerWeight / (step / 1000) / 1e9;
                var gflops = 2.0 * parameters * batch / (step / 1000) / 1e9;
                var boundMs = parameters * bytesPerWeight / (bandwidth * 1e9) * 1000;
                rows.Add(new[]
                {
                    e.Name, batch.ToString(CultureInfo.InvariantCulture), Table.Ms(prefill), Table.Ms(step), Table.Ms(boundMs),
                    gbps.ToString("F1", CultureInfo.InvariantCulture), (100 * gbps / bandwidth).ToString("F0", CultureInfo.InvariantCulture),
                    gflops.ToString("F1", CultureInfo.InvariantCulture), (100 * gflops / peak).ToString("F0", CultureInfo.InvariantCulture),
                });
            }
        }
        Table.Print(new[] { "engine", "batch", "prefill ms (32-token sources)", "ms/step", "bandwidth bound ms", "weights GB/s", "% of bandwidth", "weight GFLOP/s", "% of matmul peak" }, rows, textColumns: 2);
        Console.WriteLine();
        Console.WriteLine($"{o.Shape} shape: a decode step reads {parameters / 1e6:F1} M weights (decoder + projection; " +
            $"{parameters * 4 / 1e6:F1} MB in float32, {parameters / 1e6:F1} MB in int8). % of bandwidth counts the bytes of " +
            "the weights as stored; % of peak counts 2 FLOPs per weight per row against the float32 matmul peak.");
    }

    /// <summary>GB/s of one thread summing 512 MiB of floats with vectors (median of runs).</summary>
    private static unsafe double ReadBandwidth(int runs)
    {
        const long count = 128L << 20;
        var data = (float*)NativeMemory.AlignedAlloc((nuint)(count * 4), 64);
        try
        {
            new Span<float>(data, (int)count).Fill(1); // first touch outside the timing
            var sink = 0f;
            var seconds = Timing.Repeat(Math.Max(3, runs), () =>
            {
                var watch = Stopwatch.StartNew();
                Vector256<float> a = default, b = default, c = default, e = default;
                for (long i = 0; i < count; i += 32)
                {
                    a += Vector256.Load(data + i);
                    b += Vector256.Load(data + i + 8);
                    c += Vector256.Load(data + i + 16);
                    e += Vector256.Load(data + i + 24);
                }
                sink += Vector256.Sum(a + b + c + e);
                return watch.Elapsed.TotalSeconds;
            });
            GC.KeepAlive(sink);
            return count * 4 / Timing.Median(seconds) / 1e9;
        }
        finally
        {
            NativeMemory.AlignedFree(data);
        }
    }

    /// <summary>GFLOP/s of LibTorch's float32 1024×1024·1024×1024 product (median of runs).</summary>
    private static double MatmulPeak(int runs)
    {
        using var scope = NewDisposeScope();
        var a = randn(1024, 1024);
        var b = randn(1024, 1024);
        var seconds = Timing.Repeat(Math.Max(3, runs), () =>
        {
            using var inner = NewDisposeScope();
            var watch = Stopwatch.StartNew();
            for (var i = 0; i < 4; i++) mm(a, b).Dispose();
            return watch.Elapsed.TotalSeconds / 4;
        });
        return 2.0 * 1024 * 1024 * 1024 / Timing.Median(seconds) / 1e9;
    }
}
