using System.Text.Json;
using TorchSharp;
using TransformerInference.Decoding;
using Xunit;

namespace TransformerInference.Tests;

/// <summary>End to end: text in, text out, through the tokenizers and the cached decoder.</summary>
public class TranslatorTests
{
    public static TheoryData<string> FixtureNames => new() { "seed-tiny", "thinam-tiny" };

    /// <summary>The fixture's translator; its head count comes from the model_args.json beside the checkpoint.</summary>
    internal static Translator Open(string fixture, TranslatorOptions? options = null) =>
        Translator.Load(Fixtures.Path_(fixture, "tmodel.pt"), Fixtures.Path_(fixture, "tokenizer_en.json"),
            Fixtures.Path_(fixture, "tokenizer_ne.json"), options);

    private static JsonElement[] Sentences(string fixture) =>
        Fixtures.Json(fixture, "expected.json").GetProperty("sentences").EnumerateArray().ToArray();

    [Theory, MemberData(nameof(FixtureNames))]
    public void EveryFixtureSentenceTranslatesToTheReferenceText(string fixture)
    {
        using var translator = Open(fixture);
        foreach (var s in Sentences(fixture))
        {
            var src = s.GetProperty("src").GetString()!;
            if (s.TryGetProperty("error", out var error) && error.ValueKind == JsonValueKind.String)
            {
                var e = Assert.Throws<ArgumentException>(() => translator.Translate(src));
                Assert.Contains("39 tokens", e.Message);
                Assert.Contains("at most 38", e.Message);
                continue;
            }
            var result = translator.TranslateDetailed(new[] { src })[0];
            Assert.Equal(s.GetProperty("output_text").GetString(), result.Text);
            var expectedIds = s.GetProperty("output_ids").Ints();
            Assert.Equal(expectedIds.Skip(1).Take(expectedIds.Length - 2), result.Ids);
        }
    }

    [Fact]
    public void BatchOfSixteenMixedLengthsEqualsOneByOne()
    {
        using var translator = Open("seed-tiny", new TranslatorOptions { MaxBatchSize = 16 });
        var inputs = Sentences("seed-tiny").Where(s => s.GetProperty("output_ids").ValueKind == JsonValueKind.Array)
            .Select(s => s.GetProperty("src").GetString()!).Where(s => s.Trim().Length > 0).Take(16).ToArray();
        Assert.Equal(16, inputs.Length);
        Assert.True(inputs.Select(i => i.Split(' ').Length).Distinct().Count() > 3, "the batch mixes lengths");
        var alone = inputs.Select(i => translator.Translate(i)).ToArray();
        Assert.Equal(alone, translator.Translate(inputs));
        // Token-limited batches (several small batches) give the same result too.
        using var small = Open("seed-tiny", new TranslatorOptions { MaxBatchSize = 16, MaxBatchTokens = 60 });
        Assert.Equal(alone, small.Translate(inputs));
        // A token limit below one input's length: every input runs alone, with the same result.
        using var tiny = Open("seed-tiny", new TranslatorOptions { MaxBatchTokens = 4 });
        Assert.Equal(alone, tiny.Translate(inputs));
    }

    [Fact]
    public void EmptyInputGivesEmptyOutputAndTruncationIsOptional()
    {
        using var translator = Open("seed-tiny");
        Assert.Equal("", translator.Translate(""));
        Assert.Equal("", translator.Translate("   \t "));
        var tooLong = Sentences("seed-tiny").Single(s => s.GetProperty("kind").GetString() == "too_long").GetProperty("src").GetString()!;
        Assert.Throws<ArgumentException>(() => translator.Translate(tooLong));
        using var truncating = Open("seed-tiny", new TranslatorOptions { Truncate = true });
        Assert.False(string.IsNullOrEmpty(truncating.Translate(tooLong)));
    }

    [Fact]
    public async Task AsyncAndStreamingGiveTheSameTokens()
    {
        using var translator = Open("seed-tiny");
        var expected = translator.Translate("I love you so much");
        Assert.Equal(expected, await translator.TranslateAsync("I love you so much"));
        var dir = Fixtures.Path_("seed-tiny");
        using (var loaded = await Translator.LoadAsync(Path.Combine(dir, "tmodel.pt"), Path.Combine(dir, "tokenizer_en.json"),
                   Path.Combine(dir, "tokenizer_ne.json"), new TranslatorOptions { Heads = 4 }))
            Assert.Equal(expected, loaded.Translate("I love you so much"));
        var pieces = new List<string>();
        await foreach (var t in translator.TranslateStreamAsync("I love you so much")) pieces.Add(t);
        Assert.Equal(expected, string.Concat(pieces));
        Assert.Equal(6, pieces.Count); // one piece per token
        Assert.Equal(" तपाईंलाई", pieces[1]);
    }

    [Fact]
    public async Task CancellingAStreamStopsIt()
    {
        using var translator = Open("seed-tiny");
        using var cts = new CancellationTokenSource();
        var received = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var _ in translator.TranslateStreamAsync("I love you so much", new DecodingOptions { IgnoreEos = true }, cts.Token))
            {
                if (++received == 2) cts.Cancel();
            }
        });
        Assert.InRange(received, 2, 3);
        // The translator is usable afterwards (the worker released the model).
        Assert.Equal("म तपाईंलाई एकदम धेरै माया गर्छु", translator.Translate("I love you so much"));
    }

    [Fact]
    public void CancellationMidDecodeAndRepeatedCallsLeaveNoLiveTensors()
    {
        using var translator = Open("seed-tiny");
        var model = translator.Model;
        var source = new IReadOnlyList<int>[] { new[] { 2, 31, 25, 14, 9, 8, 3 } };
        Generator.Generate(model, source); // warm-up (lazy native initialisation)
        var stats = DisposeScopeManager.Statistics;
        var before = stats.ThreadTotalLiveCount;
        using (var cts = new CancellationTokenSource())
        {
            Assert.Throws<OperationCanceledException>(() => Generator.Generate(model, source, new DecodingOptions { IgnoreEos = true },
                (_, _) => cts.Cancel(), cts.Token));
        }
        Assert.Equal(before, stats.ThreadTotalLiveCount);
        for (var i = 0; i < 300; i++)
            Generator.Generate(model, source, new DecodingOptions { BeamSize = i % 3 + 1, Sample = false });
        Assert.Equal(before, stats.ThreadTotalLiveCount);
    }

    [Fact]
    public void TheCacheIsResetBetweenInputs()
    {
        using var translator = Open("seed-tiny");
        var first = translator.Translate("we help them .");
        translator.Translate("I love you so much");
        Assert.Equal(first, translator.Translate("we help them ."));
    }
}
