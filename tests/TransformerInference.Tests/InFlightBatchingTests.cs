using TransformerInference.Decoding;
using TransformerInference.Loading;
using Xunit;

namespace TransformerInference.Tests;

/// <summary>In-flight batching: calls arriving while others decode join the running batch, and every call gets
/// exactly what it gets alone — greedy, beam, seeded sampling and logits processors mixed; cancelling one call
/// removes only its rows.</summary>
public class InFlightBatchingTests
{
    private static Translator Seed() => Fixtures.SeedTranslator();

    private static string[] Sentences() => Fixtures.Json("seed-tiny", "expected.json").GetProperty("sentences").EnumerateArray()
        .Select(s => s.GetProperty("src").GetString()!).Where(s => s.Length > 0).Take(24).ToArray();

    /// <summary>Different searches and processors, each its own call.</summary>
    private static readonly DecodingOptions[] Mixed =
    {
        new(),
        new() { BeamSize = 3, NBest = 2 },
        new() { Sample = true, Seed = 11, TopK = 8, Temperature = 0.9 },
        new() { RepetitionPenalty = 1.3, NoRepeatNgramSize = 2 },
        new() { BeamSize = 2, LengthPenalty = 0.6, EarlyStopping = EarlyStopping.Never, MinLength = 4 },
        new() { Sample = true, Seed = 5, TopP = 0.8 },
        new() { MaxNewTokens = 5, MinNewTokens = 3 },
        new() { BeamSize = 4, EarlyStopping = EarlyStopping.Immediate, NoRepeatNgramSize = 3, NBest = 4 },
    };

    private static void AssertSame(Translation expected, Translation actual, string what)
    {
        Assert.Equal(expected.Text, actual.Text);
        Assert.Equal(expected.Hypotheses.Count, actual.Hypotheses.Count);
        for (var h = 0; h < expected.Hypotheses.Count; h++)
        {
            Assert.True(expected.Hypotheses[h].Sequence.SequenceEqual(actual.Hypotheses[h].Sequence), $"{what} hypothesis {h}");
            Assert.True(Math.Abs(expected.Hypotheses[h].Score - actual.Hypotheses[h].Score) < 1e-4, $"{what} hypothesis {h} score");
        }
    }

    [Fact]
    public async Task MixedConcurrentCallsEqualSequentialOnes()
    {
        var sentences = Sentences();
        var calls = Enumerable.Range(0, 16).Select(i => (Texts: sentences.Skip(i % 12).Take(1 + i % 3).ToArray(), Options: Mixed[i % Mixed.Length])).ToArray();
        Translation[][] sequential;
        using (var alone = Seed())
            sequential = calls.Select(c => c.Texts.Select(t => alone.TranslateDetailed(new[] { t }, c.Options)[0]).ToArray()).ToArray();

        using var shared = Seed();
        // Staggered starts: later calls arrive while earlier ones decode.
        var tasks = calls.Select(async (c, i) =>
        {
            await Task.Delay(i % 4 * 3);
            return await shared.TranslateDetailedAsync(c.Texts, c.Options);
        }).ToArray();
        var together = await Task.WhenAll(tasks);
        for (var i = 0; i < calls.Length; i++)
            for (var j = 0; j < calls[i].Texts.Length; j++)
                AssertSame(sequential[i][j], together[i][j], $"call {i} text {j}");
        Assert.True(shared.StartedScheduler!.JoinedRunningBatches > 0, "no call joined a running batch");
    }

    [Fact]
    public async Task CancellingOneCallLeavesTheOthersIntact()
    {
        var sentences = Sentences();
        using var translator = Seed();
        var expected = sentences.Take(6).Select(t => translator.TranslateDetailed(new[] { t })[0]).ToArray();
        using var cts = new CancellationTokenSource();
        var endless = new DecodingOptions { IgnoreEos = true }; // runs to the model's length limit
        var doomed = translator.TranslateDetailedAsync(new[] { sentences[0], sentences[1] }, endless, cts.Token);
        var others = sentences.Take(6).Select(t => translator.TranslateDetailedAsync(new[] { t })).ToArray();
        await Task.Delay(5);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => doomed);
        var results = await Task.WhenAll(others);
        for (var i = 0; i < expected.Length; i++) AssertSame(expected[i], results[i][0], $"text {i}");
    }

    [Theory]
    [InlineData("serial-gqa-rmsnorm-rotary-swiglu")]
    [InlineData("serial-layernorm-learned-gelu")]
    [InlineData("parallel-mqa-rmsnorm-rotary-swiglu-tied")]
    public async Task RowsJoiningLaterKeepTheirOwnPositions(string variant)
    {
        // Rotary and learned positions, GQA and MQA: rows that join a running batch start at position 0 of their own.
        using var model = ModelLoader.Load(Fixtures.Path_("variants", variant));
        var random = new Random(3);
        var sources = Enumerable.Range(0, 6).Select(i => (IReadOnlyList<int>)Enumerable.Range(0, 3 + 2 * i)
            .Select(_ => random.Next(4, model.Config.SourceVocabSize)).ToArray()).ToArray();
        var options = new[] { new DecodingOptions { MaxNewTokens = 12, IgnoreEos = true }, new DecodingOptions { MaxNewTokens = 9, BeamSize = 2, NBest = 2 } };
        var alone = sources.Select((s, i) => Generator.Generate(model, new[] { s }, options[i % 2])[0]).ToArray();
        using var scheduler = new BatchScheduler(model);
        var tasks = new List<Task<IReadOnlyList<IReadOnlyList<Hypothesis>>>>();
        for (var i = 0; i < sources.Length; i++)
        {
            tasks.Add(scheduler.GenerateAsync(new[] { sources[i] }, options[i % 2]));
            await Task.Delay(2);
        }
        var together = await Task.WhenAll(tasks);
        for (var i = 0; i < sources.Length; i++)
        {
            Assert.Equal(alone[i].Select(h => h.Ids), together[i][0].Select(h => h.Ids));
            Assert.Equal(alone[i].Select(h => Math.Round(h.Score, 3)), together[i][0].Select(h => Math.Round(h.Score, 3)));
        }
        Assert.True(scheduler.JoinedRunningBatches > 0, "no call joined a running batch");
    }
}
