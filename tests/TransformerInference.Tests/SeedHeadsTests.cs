using TransformerInference.Loading;
using Xunit;

namespace TransformerInference.Tests;

/// <summary>Seed checkpoints do not record their head count; the library takes it from the <c>model_args.json</c> the
/// seed's training scripts write beside them (issue 8 item 6), checks an explicit <c>Heads</c> against it, and names
/// a malformed file.</summary>
public class SeedHeadsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ti-heads-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>seed-tiny (4 heads) copied to a temporary folder, with <paramref name="modelArgs"/> as its
    /// model_args.json (none when null).</summary>
    private string CopySeed(string? modelArgs)
    {
        foreach (var f in new[] { "tmodel.pt", "tokenizer_en.json", "tokenizer_ne.json" })
            File.Copy(Fixtures.Path_("seed-tiny", f), Path.Combine(_dir, f));
        if (modelArgs is not null) File.WriteAllText(Path.Combine(_dir, "model_args.json"), modelArgs);
        return Path.Combine(_dir, "tmodel.pt");
    }

    [Theory]
    [InlineData("seed-tiny", 4)]
    [InlineData("thinam-tiny", 8)]
    public void WithoutHeadsTheCountComesFromModelArgs(string fixture, int heads)
    {
        using var model = ModelLoader.LoadSeedCheckpoint(Fixtures.Path_(fixture, "tmodel.pt"));
        Assert.Equal(heads, model.Config.Heads);
        using var explicitModel = ModelLoader.Load(Fixtures.Path_(fixture, "tmodel.pt"), new ModelLoadOptions { Heads = heads });
        Assert.Equal(heads, explicitModel.Config.Heads);
    }

    [Fact]
    public void TranslatorLoadOnTheDemoModelTranslatesWithItsFourHeads()
    {
        // seed-tiny's checkpoint is the bundled demo model (samples/Translate/DemoModel, same bytes and model_args.json);
        // with the old default of 8 heads it computed something else.
        using var translator = Translator.Load(Fixtures.Path_("seed-tiny", "tmodel.pt"), Fixtures.Path_("seed-tiny", "tokenizer_en.json"),
            Fixtures.Path_("seed-tiny", "tokenizer_ne.json"));
        Assert.Equal(4, translator.Model.Config.Heads);
        Assert.Equal("म तपाईंलाई एकदम धेरै माया गर्छु", translator.Translate("I love you so much"));
    }

    [Fact]
    public void AnExplicitHeadsThatDisagreesWithModelArgsNamesBothAndTheFile()
    {
        var checkpoint = Fixtures.Path_("seed-tiny", "tmodel.pt");
        var e = Assert.Throws<ArgumentException>(() => ModelLoader.LoadSeedCheckpoint(checkpoint, new ModelLoadOptions { Heads = 8 }));
        Assert.Equal(nameof(ModelLoadOptions.Heads), e.ParamName);
        Assert.Contains("Heads is 8", e.Message);
        Assert.Contains("\"h\": 4", e.Message);
        Assert.Contains(Fixtures.Path_("seed-tiny", "model_args.json"), e.Message);
        var t = Assert.Throws<ArgumentException>(() => Translator.Load(checkpoint, Fixtures.Path_("seed-tiny", "tokenizer_en.json"),
            Fixtures.Path_("seed-tiny", "tokenizer_ne.json"), new TranslatorOptions { Heads = 2 }));
        Assert.Contains("Heads is 2", t.Message);
    }

    [Theory]
    [InlineData("{\"h\": \"four\", \"d_model\": [}", null)]
    [InlineData("[4]", null)]
    [InlineData("{\"h\": 0}", null)]
    [InlineData("{\"h\": 4.5}", null)]
    public void AMalformedModelArgsIsACheckpointErrorNamingIt(string json, int? heads)
    {
        var checkpoint = CopySeed(json);
        var e = Assert.Throws<CheckpointException>(() => ModelLoader.LoadSeedCheckpoint(checkpoint, new ModelLoadOptions { Heads = heads }));
        Assert.Equal(Path.Combine(_dir, "model_args.json"), e.FilePath);
        Assert.Contains("model_args.json", e.Message);
        Assert.Throws<CheckpointException>(() => Translator.Load(checkpoint, Path.Combine(_dir, "tokenizer_en.json"),
            Path.Combine(_dir, "tokenizer_ne.json"), new TranslatorOptions { Heads = heads }));
    }

    /// <summary>An explicit Heads is the caller's answer: a malformed model_args.json beside the checkpoint does not
    /// block the model (issue 9), which then computes exactly as with a valid file recording the same count.</summary>
    [Theory]
    [InlineData("{\"h\": \"four\", \"d_model\": [}")]
    [InlineData("[4]")]
    [InlineData("{\"h\": 0}")]
    public void AnExplicitHeadsLoadsDespiteAMalformedModelArgs(string json)
    {
        var checkpoint = CopySeed(json);
        using var translator = Translator.Load(checkpoint, Path.Combine(_dir, "tokenizer_en.json"),
            Path.Combine(_dir, "tokenizer_ne.json"), new TranslatorOptions { Heads = 4 });
        using var reference = Fixtures.SeedTranslator();
        Assert.Equal(reference.Translate("I love you so much"), translator.Translate("I love you so much"));
        Assert.Throws<CheckpointException>(() => ModelLoader.LoadSeedCheckpoint(checkpoint));
    }

    [Fact]
    public void WithoutModelArgsOrHTheDefaultIsEightAndAnyExplicitCountIsTaken()
    {
        var checkpoint = CopySeed(modelArgs: null);
        using (var model = ModelLoader.LoadSeedCheckpoint(checkpoint)) Assert.Equal(8, model.Config.Heads);
        using (var model = ModelLoader.LoadSeedCheckpoint(checkpoint, new ModelLoadOptions { Heads = 2 })) Assert.Equal(2, model.Config.Heads);
        File.WriteAllText(Path.Combine(_dir, "model_args.json"), "{\"d_model\": 64}");
        using (var model = ModelLoader.LoadSeedCheckpoint(checkpoint)) Assert.Equal(8, model.Config.Heads);
    }
}
