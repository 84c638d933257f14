using System.Diagnostics;
using TorchSharp;
using TransformerInference.Decoding;

namespace TransformerInference.Samples.Benchmark;

internal static partial class Modes
{
    /// <summary>
    /// Memory over thousands of calls: process RSS (after a full GC) and live TorchSharp tensors, sampled every
    /// tenth of the run, while greedy, sampling and beam calls on batches of 4 alternate. Flat columns = no leak.
    /// </summary>
    public static void Soak(Options o)
    {
        using var model = RandomModel.Create(RandomModel.Config(small: true), o.DType);
        var sources = Enumerable.Range(0, 4).Select(i => (IReadOnlyList<int>)new[] { 2 }
            .Concat(Enumerable.Range(0, 6 + 3 * i).Select(j => 4 + (j * 37 + i * 11) % 500)).Append(3).ToArray()).ToArray();
        var variants = new[]
        {
            new DecodingOptions { MaxNewTokens = 8, IgnoreEos = true },
            new DecodingOptions { MaxNewTokens = 8, Sample = true, TopK = 20, Seed = 1 },
            new DecodingOptions { MaxNewTokens = 8, BeamSize = 3, NBest = 2 },
        };
        var calls = o.Calls;
        var rows = new List<string[]>();
        var process = Process.GetCurrentProcess();
        var clock = Stopwatch.StartNew();
        long? firstRss = null;
        for (var i = 0; i <= calls; i++)
        {
            if (i % Math.Max(calls / 10, 1) == 0 || i == calls)
            {
                GC.Collect();
                GC.WaitForPendingFinalizers();
                GC.Collect();
                process.Refresh();
                var rss = process.WorkingSet64;
                firstRss ??= rss;
                rows.Add(new[]
                {
                    i.ToString(), (rss / (1024.0 * 1024)).ToString("F1"), Table.Ratio(rss / (double)firstRss.Value),
                    DisposeScopeManager.Statistics.ThreadTotalLiveCount.ToString(), Table.Ms(clock.Elapsed.TotalMilliseconds),
                });
            }
            if (i < calls) Generator.Generate(model, sources, variants[i % variants.Length]);
        }
        Table.Print(new[] { "calls done", "RSS MiB", "RSS × start", "live tensors", "elapsed ms" }, rows);
    }
}
