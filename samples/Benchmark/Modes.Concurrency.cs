using System.Diagnostics;
using TransformerInference.Decoding;

namespace TransformerInference.Samples.Benchmark;

internal static partial class Modes
{
    /// <summary>16 callers, each translating 8 sentences one call after another, through one shared decode loop (the
    /// <c>BatchScheduler</c> a <c>Translator</c> uses), against the same 128 single-sentence calls one at a time;
    /// alternated runs, medians, tokens per second.</summary>
    public static void Concurrency(Options o)
    {
        const int callers = 16, perCaller = 8;
        var config = RandomModel.Config(o.Small);
        using var model = RandomModel.Create(config, o.DType);
        var calls = Enumerable.Range(0, callers).Select(c => Enumerable.Range(0, perCaller)
            .Select(s => (IReadOnlyList<int>)RandomModel.Source(config, 12 + (c + s) % 20, seed: 100 + c * perCaller + s)).ToArray()).ToArray();
        var options = new DecodingOptions { MaxNewTokens = o.Tokens, IgnoreEos = true };
        using var scheduler = new BatchScheduler(model, maxBatchSize: callers * perCaller, maxBatchTokens: 1 << 20);
        long tokens = callers * perCaller * (long)o.Tokens;
        double Serial()
        {
            var watch = Stopwatch.StartNew();
            foreach (var call in calls)
                foreach (var sentence in call) scheduler.GenerateAsync(new[] { sentence }, options).GetAwaiter().GetResult();
            return watch.Elapsed.TotalMilliseconds;
        }
        double Concurrent()
        {
            var watch = Stopwatch.StartNew();
            Task.WaitAll(calls.Select(async call =>
            {
                foreach (var sentence in call) await scheduler.GenerateAsync(new[] { sentence }, options).ConfigureAwait(false);
            }).ToArray());
            return watch.Elapsed.TotalMilliseconds;
        }
        Serial();
        Concurrent();
        var serial = new List<double>();
        var concurrent = new List<double>();
        for (var r = 0; r < o.Runs; r++)
        {
            serial.Add(Serial());
            concurrent.Add(Concurrent());
        }
        double s = Timing.Median(serial), c2 = Timing.Median(concurrent);
        Table.Print(new[] { $"{callers} callers × {perCaller} one-sentence calls, {o.Tokens} new tokens each", "ms", "tokens/s", "ratio" }, new[]
        {
            new[] { "calls one at a time", Table.Ms(s), (tokens / (s / 1000)).ToString("F0", System.Globalization.CultureInfo.InvariantCulture), "1.00" },
            new[] { "calls concurrent (in-flight batching)", Table.Ms(c2), (tokens / (c2 / 1000)).ToString("F0", System.Globalization.CultureInfo.InvariantCulture), Table.Ratio(s / c2) },
        });
        Report.Figures["serial_ms"] = s;
        Report.Figures["concurrent_ms"] = c2;
        Report.Figures["throughput_ratio"] = s / c2;
        Report.Figures["joined_running_batches"] = scheduler.JoinedRunningBatches;
    }
}
