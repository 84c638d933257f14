using System.Diagnostics;
using System.Globalization;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TransformerInference.Decoding;
using TransformerInference.Modeling;
using static TorchSharp.torch;
using Generator = TransformerInference.Decoding.Generator;

namespace TransformerInference.Samples.Benchmark;

internal static partial class Modes
{
    /// <summary>One way of running the same weights: a kernel (through the library's kernel variable), a weight
    /// storage and a dtype.</summary>
    private sealed record Engine(string Name, string Kernel, WeightQuantization Quantization, ScalarType DType);

    private const string KernelVariable = "TRANSFORMERINFERENCE_KERNEL";

    /// <summary>Our widest kernel this CPU runs natively (what the library picks by default).</summary>
    private static string BestKernel() =>
        Vector512.IsHardwareAccelerated ? "avx512" : Avx2.IsSupported && Fma.IsSupported ? "avx2" : "portable";

    private static List<Engine> Engines(Options o)
    {
        var best = BestKernel();
        var list = new List<Engine> { new("LibTorch float32 (before)", "libtorch", WeightQuantization.None, ScalarType.Float32) };
        list.Add(new($"ours float32 ({best})", best, WeightQuantization.None, ScalarType.Float32));
        if (o.AllKernels && best != "portable") list.Add(new("ours float32 (portable)", "portable", WeightQuantization.None, ScalarType.Float32));
        list.Add(new($"ours int8 ({best})", best, WeightQuantization.Int8, ScalarType.Float32));
        list.Add(new($"ours bf16 weights ({best})", best, WeightQuantization.BFloat16, ScalarType.Float32));
        if (o.AllKernels) list.Add(new("LibTorch bfloat16", "libtorch", WeightQuantization.None, ScalarType.BFloat16));
        return list;
    }

    private static TransformerModel Load(TransformerConfig config, Engine e)
    {
        Environment.SetEnvironmentVariable(KernelVariable, e.Kernel);
        try
        {
            return RandomModel.Create(config, e.DType, quantization: e.Quantization);
        }
        finally
        {
            Environment.SetEnvironmentVariable(KernelVariable, null);
        }
    }

    /// <summary>Greedy decoding of exactly <paramref name="newTokens"/> tokens for a batch of 32-token sources, every
    /// engine on the same random weights, runs alternated between engines; medians. Tokens per second count every
    /// sequence of the batch.</summary>
    public static void Kernels(Options o)
    {
        var config = RandomModel.Shape(o.Shape);
        var engines = Engines(o);
        const int sourceLength = 32;
        var newTokens = o.Tokens;
        var batches = new[] { 1, 16 };
        var sources = batches.ToDictionary(b => b, b => Enumerable.Range(0, b)
            .Select(i => (IReadOnlyList<int>)RandomModel.Source(config, sourceLength, seed: 7 + i)).ToList());
        // Large shapes: one model loaded at a time, each engine's runs back to back (not alternated); otherwise all
        // loaded and alternated.
        var alternate = (long)config.TargetVocabSize * config.DModel < 100_000_000;
        var times = new Dictionary<(string, int), List<double>>();
        var ids = new Dictionary<(string, int), IReadOnlyList<int>>();
        var models = new Dictionary<string, TransformerModel>();
        try
        {
            if (alternate)
            {
                foreach (var e in engines) models[e.Name] = Load(config, e);
                foreach (var batch in batches)
                {
                    foreach (var e in engines) Timing.WarmUp(() => Once(e, batch, record: false));
                    for (var run = 0; run < o.Runs; run++)
                        foreach (var e in run % 2 == 0 ? engines : Enumerable.Reverse(engines))
                            Once(e, batch, record: true);
                }
            }
            else
            {
                foreach (var e in engines)
                {
                    var watch = Stopwatch.StartNew();
                    models[e.Name] = Load(config, e);
                    Console.WriteLine($"{e.Name}: loaded in {watch.Elapsed.TotalSeconds:F1} s");
                    foreach (var batch in batches)
                    {
                        Once(e, batch, record: false); // one warm-up: a run of these shapes lasts seconds, enough to tier up
                        for (var run = 0; run < o.Runs; run++) Once(e, batch, record: true);
                    }
                    models.Remove(e.Name, out var done);
                    done!.Dispose();
                }
                Console.WriteLine();
            }
        }
        finally
        {
            foreach (var m in models.Values) m.Dispose();
        }

        void Once(Engine e, int batch, bool record)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            using var scope = NewDisposeScope();
            var options = new DecodingOptions { MaxNewTokens = newTokens, IgnoreEos = true };
            var watch = Stopwatch.StartNew();
            var result = Generator.Generate(models[e.Name], sources[batch], options);
            var ms = watch.Elapsed.TotalMilliseconds;
            if (!record) return;
            (times.TryGetValue((e.Name, batch), out var list) ? list : times[(e.Name, batch)] = new()).Add(ms);
            ids[(e.Name, batch)] = result[0][0].Ids;
        }

        var rows = new List<string[]>();
        foreach (var batch in batches)
        {
            var baseline = Timing.Median(times[(engines[0].Name, batch)]);
            foreach (var e in engines)
            {
                var ms = Timing.Median(times[(e.Name, batch)]);
                var same = ids[(e.Name, batch)].SequenceEqual(ids[(engines[0].Name, batch)]);
                rows.Add(new[]
                {
                    e.Name, batch.ToString(CultureInfo.InvariantCulture), Table.Ms(ms / newTokens),
                    (batch * newTokens / (ms / 1000)).ToString("F0", CultureInfo.InvariantCulture),
                    Table.Ratio(ms / baseline), same ? "same" : "differ",
                });
            }
        }
        Table.Print(new[] { "engine", "batch", "ms/step", "tokens/s", "time × before", "row 0 tokens vs before" }, rows, textColumns: 2);
        Console.WriteLine();
        Console.WriteLine($"{o.Shape} shape, random weights, {sourceLength}-token sources, exactly {newTokens} new tokens (greedy); " +
            (alternate ? "runs alternated between engines." : "one model loaded at a time, its runs back to back (not alternated)."));
    }
}
