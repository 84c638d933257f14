using System.Diagnostics;
using System.Globalization;
using TorchSharp;
using TransformerInference.Decoding;
using TransformerInference.Modeling;
using static TorchSharp.torch;
using Generator = TransformerInference.Decoding.Generator;

namespace TransformerInference.Samples.Benchmark;

/// <summary>The benchmark modes (the <c>pytorch</c> mode lives in Modes.PyTorch.cs). Each prints one Markdown table.</summary>
internal static partial class Modes
{
    private const int NewTokens = 64;

    /// <summary>Cached greedy (<see cref="Generator.Generate"/>) against the naive loop that re-decodes the whole
    /// prefix every step, both producing exactly 64 tokens from a 20-token source at batch 1.</summary>
    public static void Cache(Options o)
    {
        var config = RandomModel.Config(o.Small);
        using var model = RandomModel.Create(config, o.DType);
        var source = RandomModel.Source(config, 20);
        IReadOnlyList<int> cachedIds = Array.Empty<int>(), naiveIds = Array.Empty<int>();
        var cached = Timing.Median(o.Runs, () => cachedIds = Cached(model, source));
        var naive = Timing.Median(o.Runs, () => naiveIds = Naive(model, source));

        Table.Print(new[] { "decoding (batch 1, 64 new tokens)", "ms", "ms/token", "naive / cached" }, new[]
        {
            new[] { "cached greedy (`Generator.Generate`, `IgnoreEos`)", Table.Ms(cached), Table.Ms(cached / NewTokens), "1.00" },
            new[] { "naive loop (`Decode` over the whole prefix each step)", Table.Ms(naive), Table.Ms(naive / NewTokens), Table.Ratio(naive / cached) },
        });
        // The two paths compute the same thing; different tokens would mean the comparison is not like for like.
        var firstDifference = Enumerable.Range(0, Math.Min(cachedIds.Count, naiveIds.Count))
            .FirstOrDefault(i => cachedIds[i] != naiveIds[i], -1);
        Console.WriteLine();
        Console.WriteLine(firstDifference < 0 && cachedIds.Count == naiveIds.Count
            ? $"Both paths generated the same {cachedIds.Count} tokens."
            : $"The paths' tokens differ from position {firstDifference} (rounding on near-ties of random weights).");
    }

    /// <summary>Serial vs parallel block and 8/2/1 key-value heads, at batch 1 and 16: prefill (encoder + cross K/V),
    /// decode time per cached step, and KV-cache bytes, each relative to serial with 8 KV heads.</summary>
    public static void Levers(Options o)
    {
        const int sourceLength = 32, steps = 32, capacity = 64;
        int[] batches = { 1, 16 };
        var results = new List<(int Batch, BlockKind Block, int KvHeads, double PrefillMs, double StepMs, long Bytes)>();
        foreach (var block in new[] { BlockKind.Serial, BlockKind.Parallel })
        {
            foreach (var kvHeads in new[] { 8, 2, 1 })
            {
                var config = RandomModel.Config(o.Small, block, kvHeads);
                using var model = RandomModel.Create(config, o.DType);
                foreach (var batch in batches)
                {
                    using var scope = NewDisposeScope();
                    var data = Enumerable.Range(0, batch).SelectMany(b => RandomModel.Source(config, sourceLength, seed: 7 + b))
                        .Select(id => (long)id).ToArray();
                    var sources = tensor(data, new long[] { batch, sourceLength });
                    var runs = Timing.Repeat(o.Runs, () => LeverRun(model, sources, capacity, steps));
                    results.Add((batch, block, kvHeads, Timing.Median(runs.Select(r => r.PrefillMs).ToList()),
                        Timing.Median(runs.Select(r => r.StepMs).ToList()), runs[0].Bytes));
                }
            }
        }

        var rows = new List<string[]>();
        foreach (var batch in batches)
        {
            var reference = results.Single(r => r.Batch == batch && r.Block == BlockKind.Serial && r.KvHeads == 8);
            foreach (var r in results.Where(r => r.Batch == batch))
            {
                rows.Add(new[]
                {
                    batch.ToString(CultureInfo.InvariantCulture), r.Block.ToString().ToLowerInvariant(),
                    r.KvHeads.ToString(CultureInfo.InvariantCulture),
                    Table.Ms(r.PrefillMs), Table.Ms(r.StepMs), r.Bytes.ToString("N0", CultureInfo.InvariantCulture),
                    Table.Ratio(r.PrefillMs / reference.PrefillMs), Table.Ratio(r.StepMs / reference.StepMs),
                    // Three decimals: the KV ratios are exact (1/4, 1/8) and two would round 0.125 away.
                    ((double)r.Bytes / reference.Bytes).ToString("F3", CultureInfo.InvariantCulture),
                });
            }
        }
        Table.Print(new[]
        {
            "batch", "block", "kv heads", $"prefill ms (src {sourceLength})", $"decode ms/step (avg of {steps})",
            $"KV-cache bytes (capacity {capacity})", "prefill ×", "decode ×", "KV ×",
        }, rows, textColumns: 3);
        Console.WriteLine();
        Console.WriteLine("× = ratio to the serial / 8-KV-head row of the same batch. A decode step makes one token for " +
            "every sequence of the batch. KV-cache bytes = self-attention buffers at full capacity + cross-attention K/V.");
    }

    /// <summary>Cached greedy, 64 new tokens at batch 1, with 1 and 2 LibTorch threads (the default of one is a
    /// guess for a ~1-core VM; this shows whether it holds).</summary>
    public static void Threads(Options o)
    {
        var config = RandomModel.Config(o.Small);
        using var model = RandomModel.Create(config, o.DType);
        var source = RandomModel.Source(config, 20);
        var rows = new List<string[]>();
        double? single = null;
        foreach (var threads in new[] { 1, 2 })
        {
            torch.set_num_threads(threads);
            var ms = Timing.Median(o.Runs, () => Cached(model, source));
            single ??= ms;
            rows.Add(new[] { threads.ToString(CultureInfo.InvariantCulture), Table.Ms(ms), Table.Ms(ms / NewTokens), Table.Ratio(ms / single.Value) });
        }
        torch.set_num_threads(o.Threads);
        Table.Print(new[] { "LibTorch threads", "ms (batch 1, 64 new tokens)", "ms/token", "× vs 1 thread" }, rows);
    }

    private static IReadOnlyList<int> Cached(TransformerModel model, int[] source)
    {
        using var scope = NewDisposeScope();
        var options = new DecodingOptions { MaxNewTokens = NewTokens, IgnoreEos = true };
        return Generator.Generate(model, new[] { source }, options)[0][0].Ids;
    }

    /// <summary>The textbook loop without a cache: encode once, then every step decode the whole prefix under a
    /// causal mask (cross-attention keys/values recomputed inside <see cref="TransformerModel.Decode"/>), project the
    /// last position and take the argmax.</summary>
    private static IReadOnlyList<int> Naive(TransformerModel model, int[] source)
    {
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var src = tensor(source.Select(id => (long)id).ToArray(), new long[] { 1, source.Length });
        var mask = Masks.SourceKeyMask(src, model.PadId);
        var memory = model.Encode(src, mask);
        var prefix = new List<long> { model.SosId };
        for (var step = 0; step < NewTokens; step++)
        {
            using var stepScope = NewDisposeScope();
            var target = tensor(prefix.ToArray(), new long[] { 1, prefix.Count });
            var hidden = model.Decode(memory, mask, target, Masks.Causal(prefix.Count));
            var logits = model.Project(hidden.select(1, prefix.Count - 1));
            prefix.Add(logits.argmax(-1).item<long>());
        }
        return prefix.Skip(1).Select(id => (int)id).ToArray();
    }

    /// <summary>One levers measurement: <see cref="TransformerModel.Start"/> (encoder + cross K/V), then
    /// <paramref name="steps"/> cached steps feeding each step's argmax back.</summary>
    private static (double PrefillMs, double StepMs, long Bytes) LeverRun(TransformerModel model, Tensor sources, int capacity, int steps)
    {
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var watch = Stopwatch.StartNew();
        using var cache = model.Start(sources, capacity);
        var prefill = watch.Elapsed.TotalMilliseconds;
        var tokens = full(sources.shape[0], 1, model.SosId, ScalarType.Int64);
        watch.Restart();
        for (var i = 0; i < steps; i++)
        {
            // A scope per step frees its activations at once, as a real decoder would, instead of piling up 32 steps.
            using var stepScope = NewDisposeScope();
            var next = model.Step(tokens, cache).argmax(-1, keepdim: true);
            tokens.Dispose();
            tokens = next.MoveToOuterDisposeScope();
        }
        var decode = watch.Elapsed.TotalMilliseconds / steps;
        return (prefill, decode, cache.Bytes);
    }
}

/// <summary>Warm-up plus median timing with <see cref="Stopwatch"/>: the median resists the VM's noise better than the mean.</summary>
internal static class Timing
{
    /// <summary>Runs <paramref name="run"/> once to warm up (allocator, lazy initialisation, first touch of
    /// memory), then <paramref name="runs"/> times; returns the timed runs' results.</summary>
    public static List<T> Repeat<T>(int runs, Func<T> run)
    {
        run();
        var results = new List<T>(runs);
        for (var i = 0; i < runs; i++)
        {
            // Collect first so that finalizers of earlier garbage do not run inside a timed region.
            GC.Collect();
            GC.WaitForPendingFinalizers();
            results.Add(run());
        }
        return results;
    }

    /// <summary>Warm-up for steady-state timings: <paramref name="run"/> at least 3 times and until 2 s have passed (at
    /// most 50 times). .NET's tiered JIT replaces hot methods' quick unoptimised code with optimised code in the
    /// background only after enough calls and a quiet period; after a single warm-up run the onnxruntime mode measured
    /// our small-shape batch-1 steps 3–10× slower than their steady state (DOTNET_TieredCompilation=0 gave the steady
    /// figure at once).</summary>
    public static void WarmUp(Action run)
    {
        var watch = Stopwatch.StartNew();
        for (var i = 0; i < 3 || (watch.Elapsed.TotalSeconds < 2 && i < 50); i++) run();
    }

    /// <summary>Median wall time in ms of <paramref name="runs"/> runs of <paramref name="action"/> after a warm-up.</summary>
    public static double Median(int runs, Action action) => Median(Repeat(runs, () =>
    {
        var watch = Stopwatch.StartNew();
        action();
        return watch.Elapsed.TotalMilliseconds;
    }));

    public static double Median(IReadOnlyList<double> values)
    {
        var sorted = values.Order().ToArray();
        var mid = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    }
}

/// <summary>Markdown table output.</summary>
internal static class Table
{
    public static string Ms(double ms) => ms.ToString(ms >= 100 ? "F0" : ms >= 10 ? "F1" : "F2", CultureInfo.InvariantCulture);
    public static string Ratio(double r) => r.ToString("F2", CultureInfo.InvariantCulture);

    /// <summary>Prints a table whose first <paramref name="textColumns"/> columns are left-aligned labels and the rest right-aligned numbers.</summary>
    public static void Print(IReadOnlyList<string> header, IEnumerable<string[]> rows, int textColumns = 1)
    {
        rows = rows.ToList();
        Report.Tables.Add((header, (List<string[]>)rows));
        Console.WriteLine("| " + string.Join(" | ", header) + " |");
        Console.WriteLine("|" + string.Join("|", header.Select((_, i) => i < textColumns ? "---" : "---:")) + "|");
        foreach (var row in rows) Console.WriteLine("| " + string.Join(" | ", row) + " |");
    }
}
