using System.Diagnostics;
using System.Globalization;
using TransformerInference.Decoding;
using static TorchSharp.torch;
using Generator = TransformerInference.Decoding.Generator;

namespace TransformerInference.Samples.Benchmark;

internal static partial class Modes
{
    /// <summary>16 callers, each translating 8 sentences one call after another, through one shared decode loop (the
    /// <c>BatchScheduler</c> a <c>Translator</c> uses), against the same 128 single-sentence calls one at a time;
    /// alternated runs, medians, tokens per second. Also: where the decode thread's time went in the concurrent runs,
    /// the ceiling the model's own step times allow, and a lone caller's latency through the scheduler against the
    /// same call through <c>Generator.Generate</c> directly.</summary>
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
        // Staggered: caller c starts c/16 of a call later, so that calls end and join at different steps (a step
        // boundary sees about one call leave and one join) instead of in waves.
        var stagger = 0.0;
        (double Ms, (double Admit, double Model, double Search, double Follow, long Steps, long Rows, double Encoder, double Join) Profile) Concurrent(bool staggered)
        {
            scheduler.ResetProfile();
            var watch = Stopwatch.StartNew();
            Task.WaitAll(calls.Select(async (call, c) =>
            {
                if (staggered) await Task.Delay(TimeSpan.FromMilliseconds(c * stagger)).ConfigureAwait(false);
                foreach (var sentence in call) await scheduler.GenerateAsync(new[] { sentence }, options).ConfigureAwait(false);
            }).ToArray());
            return (watch.Elapsed.TotalMilliseconds, scheduler.Profile);
        }
        Serial();
        var warm = Concurrent(false);
        stagger = warm.Ms / perCaller / callers; // a sixteenth of a call's time in the shared batch
        Concurrent(true);
        var serial = new List<double>();
        var concurrent = new List<double>();
        var staggeredRuns = new List<double>();
        var profiles = new[] { warm.Profile, warm.Profile };
        for (var r = 0; r < o.Runs; r++)
        {
            serial.Add(Serial());
            (var ms, profiles[0]) = Concurrent(false);
            concurrent.Add(ms);
            (ms, profiles[1]) = Concurrent(true);
            staggeredRuns.Add(ms);
        }
        double s = Timing.Median(serial), c2 = Timing.Median(concurrent), c3 = Timing.Median(staggeredRuns);
        Table.Print(new[] { $"{callers} callers × {perCaller} one-sentence calls, {o.Tokens} new tokens each", "ms", "tokens/s", "ratio" }, new[]
        {
            new[] { "calls one at a time", Table.Ms(s), Rate(tokens, s), "1.00" },
            new[] { "calls concurrent (in-flight batching)", Table.Ms(c2), Rate(tokens, c2), Table.Ratio(s / c2) },
            new[] { $"calls concurrent, callers staggered by {stagger:F0} ms", Table.Ms(c3), Rate(tokens, c3), Table.Ratio(s / c3) },
        });
        Console.WriteLine();
        PrintProfile("concurrent", profiles[0], "profile");
        PrintProfile($"staggered", profiles[1], "staggered_profile");

        // The ceiling: the model's own step at batch 1 and 16, and one call's encoder, measured directly.
        // In wave order (every caller's first sentence, then every caller's second, ...): a batch of `callers`
        // consecutive sentences is what a wave of calls in step decodes together, source lengths included.
        var sentences = Enumerable.Range(0, perCaller).SelectMany(s => calls.Select(c => c[s])).ToArray();
        var (step1, step16, encoder) = StepTimes(model, sentences, callers, o);
        var decodeCeiling = callers * step1 / step16;
        var callCeiling = (encoder + o.Tokens * step1) / (encoder + o.Tokens * step16 / callers);
        Table.Print(new[] { "ceiling from the model's own times", "ms", "ratio" }, new[]
        {
            new[] { "decoder step, batch 1", Table.Ms(step1), "" },
            new[] { $"decoder step, batch {callers}", Table.Ms(step16), "" },
            new[] { "encoder + cross K/V of one sentence", Table.Ms(encoder), "" },
            new[] { $"decode-only ceiling ({callers} × batch-1 step / batch-{callers} step)", "", Table.Ratio(decodeCeiling) },
            new[] { "per-call ceiling (each call's encoder included)", "", Table.Ratio(callCeiling) },
        });
        Console.WriteLine();

        // A lone caller: the scheduler's path against Generator.Generate on the caller's thread, alternated.
        var (direct, scheduled) = LoneCaller(model, scheduler, sentences.Take(8).ToArray(), options, o.Runs);
        Table.Print(new[] { $"lone caller, one sentence, {o.Tokens} new tokens (median)", "ms", "ratio" }, new[]
        {
            new[] { "Generator.Generate directly (no scheduler)", Table.Ms(direct), "1.00" },
            new[] { "through the BatchScheduler (what a Translator does)", Table.Ms(scheduled), Table.Ratio(scheduled / direct) },
        });

        Report.Figures["serial_ms"] = s;
        Report.Figures["concurrent_ms"] = c2;
        Report.Figures["serial_tokens_per_s"] = tokens / (s / 1000);
        Report.Figures["concurrent_tokens_per_s"] = tokens / (c2 / 1000);
        Report.Figures["throughput_ratio"] = s / c2;
        Report.Figures["joined_running_batches"] = scheduler.JoinedRunningBatches;
        Report.Figures["staggered_ms"] = c3;
        Report.Figures["staggered_tokens_per_s"] = tokens / (c3 / 1000);
        Report.Figures["staggered_throughput_ratio"] = s / c3;
        Report.Figures["stagger_ms"] = stagger;
        Report.Figures["step_ms_batch1"] = step1;
        Report.Figures[$"step_ms_batch{callers}"] = step16;
        Report.Figures["encoder_ms_one_sentence"] = encoder;
        Report.Figures["decode_only_ceiling_ratio"] = decodeCeiling;
        Report.Figures["per_call_ceiling_ratio"] = callCeiling;
        Report.Figures["lone_direct_ms"] = direct;
        Report.Figures["lone_scheduler_ms"] = scheduled;
        Report.Figures["lone_latency_ratio"] = scheduled / direct;
    }

    /// <summary>Where the decode thread's time went in one concurrent run, per step, printed and in the JSON.</summary>
    private static void PrintProfile(string name,
        (double Admit, double Model, double Search, double Follow, long Steps, long Rows, double Encoder, double Join) profile, string key)
    {
        var steps = Math.Max(1, profile.Steps);
        var other = profile.Admit - profile.Encoder - profile.Join;
        Table.Print(new[] { $"{name} run: {profile.Steps} steps, {(double)profile.Rows / steps:F1} rows/step on average", "ms", "ms/step" }, new[]
        {
            new[] { "admission: encoders of joining calls", Table.Ms(profile.Encoder), Table.Ms(profile.Encoder / steps) },
            new[] { "admission: joining the cache", Table.Ms(profile.Join), Table.Ms(profile.Join / steps) },
            new[] { "admission: the rest (queue, searches, cancelled rows)", Table.Ms(other), Table.Ms(other / steps) },
            new[] { "model step (decoder + projection)", Table.Ms(profile.Model), Table.Ms(profile.Model / steps) },
            new[] { "searches (token choice, host copies, callbacks)", Table.Ms(profile.Search), Table.Ms(profile.Search / steps) },
            new[] { "cache rows following the searches", Table.Ms(profile.Follow), Table.Ms(profile.Follow / steps) },
        });
        Console.WriteLine();
        Report.Figures[$"{key}_steps"] = profile.Steps;
        Report.Figures[$"{key}_rows_per_step"] = (double)profile.Rows / steps;
        Report.Figures[$"{key}_encoder_ms_per_step"] = profile.Encoder / steps;
        Report.Figures[$"{key}_join_ms_per_step"] = profile.Join / steps;
        Report.Figures[$"{key}_admit_other_ms_per_step"] = other / steps;
        Report.Figures[$"{key}_model_ms_per_step"] = profile.Model / steps;
        Report.Figures[$"{key}_search_ms_per_step"] = profile.Search / steps;
        Report.Figures[$"{key}_follow_ms_per_step"] = profile.Follow / steps;
    }

    private static string Rate(long tokens, double ms) => (tokens / (ms / 1000)).ToString("F0", CultureInfo.InvariantCulture);

    /// <summary>Median ms of one decoder step at batch 1 and at batch <paramref name="batch"/> (cache filled as a
    /// call's would be, alternated; each batch one wave of the calls, so its sources are the run's), and the median
    /// encoder run (with cross K/V) over every sentence.</summary>
    private static (double Step1, double StepN, double Encoder) StepTimes(Modeling.TransformerModel model,
        IReadOnlyList<IReadOnlyList<int>> sentences, int batch, Options o)
    {
        using var noGrad = inference_mode();
        double Steps(IReadOnlyList<IReadOnlyList<int>> sources)
        {
            using var scope = NewDisposeScope();
            using var cache = model.Start(Generator.Batch(model, sources), o.Tokens);
            using var feed = full(new long[] { sources.Count, 1 }, model.SosId, ScalarType.Int64);
            var watch = Stopwatch.StartNew();
            for (var t = 0; t < o.Tokens; t++)
            {
                using var inner = NewDisposeScope();
                model.Step(feed, cache);
            }
            return watch.Elapsed.TotalMilliseconds / o.Tokens;
        }
        double Encoder(IReadOnlyList<int> source)
        {
            using var scope = NewDisposeScope();
            var watch = Stopwatch.StartNew();
            using var cache = model.Start(Generator.Batch(model, new[] { source }), o.Tokens);
            return watch.Elapsed.TotalMilliseconds;
        }
        var one = new List<double>();
        var many = new List<double>();
        var encoders = new List<double>();
        Steps(sentences.Take(1).ToArray());
        Steps(sentences.Take(batch).ToArray());
        for (var r = 0; r < Math.Max(3, o.Runs); r++)
        {
            var wave = sentences.Skip(r * batch % sentences.Count).Take(batch).ToArray();
            one.Add(Steps(wave.Skip(r % wave.Length).Take(1).ToArray()));
            many.Add(Steps(wave));
        }
        foreach (var sentence in sentences) encoders.Add(Encoder(sentence));
        return (Timing.Median(one), Timing.Median(many), Timing.Median(encoders));
    }

    /// <summary>Median latency of single-sentence calls made directly (<c>Generator.Generate</c> on this thread) and
    /// through the scheduler (queue, decode thread, completion), the two alternated call by call.</summary>
    private static (double Direct, double Scheduled) LoneCaller(Modeling.TransformerModel model, BatchScheduler scheduler,
        IReadOnlyList<IReadOnlyList<int>> sentences, DecodingOptions options, int runs)
    {
        var direct = new List<double>();
        var scheduled = new List<double>();
        double Direct(IReadOnlyList<int> s)
        {
            var watch = Stopwatch.StartNew();
            Generator.Generate(model, new[] { s }, options);
            return watch.Elapsed.TotalMilliseconds;
        }
        double Scheduled(IReadOnlyList<int> s)
        {
            var watch = Stopwatch.StartNew();
            scheduler.GenerateAsync(new[] { s }, options).GetAwaiter().GetResult();
            return watch.Elapsed.TotalMilliseconds;
        }
        Direct(sentences[0]);
        Scheduled(sentences[0]);
        for (var r = 0; r < Math.Max(2, runs); r++)
            for (var i = 0; i < sentences.Count; i++)
            {
                // Alternate which path goes first, so that neither always runs on a warmer cache.
                if ((r + i) % 2 == 0)
                {
                    direct.Add(Direct(sentences[i]));
                    scheduled.Add(Scheduled(sentences[i]));
                }
                else
                {
                    scheduled.Add(Scheduled(sentences[i]));
                    direct.Add(Direct(sentences[i]));
                }
            }
        return (Timing.Median(direct), Timing.Median(scheduled));
    }
}
