using System.Reflection;
using TorchSharp;
using TransformerInference.Decoding;
using TransformerInference.Modeling;
using Xunit;

namespace TransformerInference.Tests;

/// <summary>The facade's conveniences: async loading of folders, async batches, cancellation of synchronous calls,
/// async disposal, the best translation's score, and a public surface without tensor plumbing.</summary>
public class TranslatorApiTests
{
    private static Translator Seed() => Fixtures.SeedTranslator();

    [Fact]
    public async Task LoadAsyncLoadsAFolderLikeLoad()
    {
        var folder = Fixtures.Path_("hf-tiny", "marian");
        await using var loaded = await Translator.LoadAsync(folder);
        using var reference = Translator.Load(folder);
        Assert.Equal(reference.Translate("I love you"), loaded.Translate("I love you"));
    }

    [Fact]
    public async Task TranslateAsyncOfAListMatchesTranslate()
    {
        using var translator = Seed();
        var texts = new[] { "I love you so much", "we help them .", "" };
        Assert.Equal(translator.Translate(texts), await translator.TranslateAsync(texts));
    }

    [Fact]
    public void SynchronousCallsHonourCancellation()
    {
        using var translator = Seed();
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => translator.Translate("I love you so much", cancellationToken: cts.Token));
        Assert.ThrowsAny<OperationCanceledException>(() => translator.Translate(new[] { "we help them ." }, cancellationToken: cts.Token));
        Assert.Equal("म तपाईंलाई एकदम धेरै माया गर्छु", translator.Translate("I love you so much")); // still usable
    }

    [Fact]
    public async Task DisposeAsyncFreesTheModel()
    {
        var translator = Seed();
        await translator.DisposeAsync();
        Assert.Throws<ObjectDisposedException>(() => translator.Translate("I love you so much"));
        await translator.DisposeAsync(); // twice is fine
    }

    [Fact]
    public void ResultCarriesTheBestScore()
    {
        using var translator = Seed();
        var greedy = translator.TranslateDetailed(new[] { "I love you so much" })[0];
        Assert.True(greedy.Score < 0);
        Assert.Equal(greedy.Hypotheses[0].Hypothesis.Score, greedy.Score);
        Assert.Equal(greedy.LogProbability, greedy.Score); // greedy: the score is the log-probability
        var beam = translator.TranslateDetailed(new[] { "we help them ." }, new DecodingOptions { BeamSize = 3, NBest = 3, LengthPenalty = 1.0 })[0];
        Assert.Equal(beam.Hypotheses[0].Score, beam.Score);
        Assert.Equal(beam.LogProbability / Math.Pow(beam.Ids.Count + 1, 1.0), beam.Score, 6); // EOS counted in the length
        Assert.True(beam.Hypotheses.Zip(beam.Hypotheses.Skip(1)).All(p => p.First.Score >= p.Second.Score));
        Assert.Equal(0, translator.TranslateDetailed(new[] { "" })[0].Score);
    }

    [Fact]
    public void PublicSurfaceHasNoTensorPlumbing()
    {
        Assert.False(typeof(TransformerModel).Assembly.GetType("TransformerInference.Modeling.Masks")!.IsPublic);
        var tensorMembers = typeof(TransformerModel).GetMethods(BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly)
            .Where(m => m.ReturnType == typeof(torch.Tensor))
            .Select(m => m.Name).ToArray();
        Assert.Equal(new[] { "Step" }, tensorMembers); // the ISeq2SeqModel contract only
    }
}
