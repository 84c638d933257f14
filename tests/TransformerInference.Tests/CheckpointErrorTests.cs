using TorchSharp;
using TorchSharp.PyBridge;
using TransformerInference.Loading;
using Xunit;

namespace TransformerInference.Tests;

/// <summary>Bad files and bad configurations give typed exceptions naming the file and tensor.</summary>
public class CheckpointErrorTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ti-ckpt-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string Seed => Fixtures.Path_("seed-tiny", "tmodel.pt");

    [Fact]
    public void MissingFileNamesThePath()
    {
        var path = Path.Combine(_dir, "nope.pt");
        var e = Assert.Throws<FileNotFoundException>(() => ModelLoader.LoadSeedCheckpoint(path));
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void CorruptAndTruncatedFilesAreReportedWithTheirPath()
    {
        var garbage = Path.Combine(_dir, "garbage.pt");
        File.WriteAllText(garbage, "this is not a checkpoint");
        var e1 = Assert.Throws<CheckpointException>(() => ModelLoader.LoadSeedCheckpoint(garbage));
        Assert.Equal(garbage, e1.FilePath);

        var truncated = Path.Combine(_dir, "truncated.pt");
        var bytes = File.ReadAllBytes(Seed);
        File.WriteAllBytes(truncated, bytes[..(bytes.Length / 2)]);
        var e2 = Assert.Throws<CheckpointException>(() => ModelLoader.LoadSeedCheckpoint(truncated, new ModelLoadOptions { Heads = 4 }));
        Assert.Contains(truncated, e2.Message);
    }

    private string SaveModified(Action<Dictionary<string, torch.Tensor>> change)
    {
        var sd = Safetensors.LoadStateDict(Fixtures.Path_("variants", "serial-seed", "model.safetensors"));
        change(sd);
        var folder = Path.Combine(_dir, Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        File.Copy(Fixtures.Path_("variants", "serial-seed", "config.json"), Path.Combine(folder, "config.json"));
        Safetensors.SaveStateDict(Path.Combine(folder, "model.safetensors"), sd);
        foreach (var t in sd.Values) t.Dispose();
        return folder;
    }

    [Fact]
    public void MissingUnexpectedAndMisshapedTensorsAreNamed()
    {
        const string name = "decoder.layers.1.cross_attention_block.w_k.weight";
        var missing = SaveModified(sd => { sd.Remove(name, out var t); t?.Dispose(); });
        var e1 = Assert.Throws<CheckpointException>(() => ModelLoader.LoadFolder(missing));
        Assert.Equal(name, e1.TensorName);
        Assert.Contains("missing", e1.Message);

        var extra = SaveModified(sd => sd["decoder.layers.2.extra.weight"] = torch.zeros(3));
        var e2 = Assert.Throws<CheckpointException>(() => ModelLoader.LoadFolder(extra));
        Assert.Contains("decoder.layers.2.extra.weight", e2.Message);

        var misshaped = SaveModified(sd => { sd[name].Dispose(); sd[name] = torch.zeros(16, 32); });
        var e3 = Assert.Throws<CheckpointException>(() => ModelLoader.LoadFolder(misshaped));
        Assert.Equal(name, e3.TensorName);
        Assert.Contains("[16, 32]", e3.Message);
        Assert.Contains("[32, 32]", e3.Message);
    }

    [Fact]
    public void HeadsThatDoNotDivideDModelAreRejected()
    {
        var seed = Path.Combine(_dir, "tmodel.pt"); // without the model_args.json (h = 4) that 5 would disagree with
        File.Copy(Seed, seed);
        var e = Assert.Throws<ArgumentException>(() => ModelLoader.LoadSeedCheckpoint(seed, new ModelLoadOptions { Heads = 5 }));
        Assert.Contains("5", e.Message);
        Assert.Contains("64", e.Message);
        Assert.Contains(seed, e.Message);
    }

    [Fact]
    public void BadConfigJsonIsReportedWithTheField()
    {
        var folder = SaveModified(_ => { });
        var config = Path.Combine(folder, "config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"serial\"", "\"diagonal\""));
        var e = Assert.Throws<CheckpointException>(() => ModelLoader.LoadFolder(folder));
        Assert.Contains("block", e.Message);
        Assert.Contains("diagonal", e.Message);
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"diagonal\"", "\"serial\"").Replace("\"d_model\": 32", "\"d_model\": \"32\""));
        var e2 = Assert.Throws<CheckpointException>(() => ModelLoader.LoadFolder(folder));
        Assert.Contains("d_model", e2.Message);
        File.WriteAllText(config, "{ not json");
        Assert.Throws<CheckpointException>(() => ModelLoader.LoadFolder(folder));
    }

    [Fact]
    public void AFailedBuildFreesEveryTensorItTook()
    {
        // The extra tensor is only found after every other weight was taken and fused.
        var extra = SaveModified(sd => sd["zzz.unused"] = torch.zeros(3));
        var stats = DisposeScopeManager.Statistics;
        Assert.Throws<CheckpointException>(() => ModelLoader.LoadFolder(extra)); // warm-up: lazy native state
        var before = stats.ThreadTotalLiveCount;
        Assert.Throws<CheckpointException>(() => ModelLoader.LoadFolder(extra));
        Assert.Equal(before, stats.ThreadTotalLiveCount);
        // A tensor missing in the middle of a layer: the half-built layer's weights are freed too.
        var missing = SaveModified(sd => { sd.Remove("decoder.layers.1.cross_attention_block.w_v.weight", out var t); t?.Dispose(); });
        Assert.Throws<CheckpointException>(() => ModelLoader.LoadFolder(missing));
        Assert.Equal(before, stats.ThreadTotalLiveCount);
    }

    [Fact]
    public void APlainStateDictFileLoadsLikeTheCheckpoint()
    {
        // torch.save(model.state_dict()) instead of the training checkpoint dict: re-pickle the author-scheme weights.
        var raw = PyTorchUnpickler.UnpickleStateDict(Fixtures.Path_("thinam-tiny", "tmodel.pt"));
        var plain = Path.Combine(_dir, "plain.pt");
        PyTorchPickler.PickleStateDict(plain, (System.Collections.IDictionary)raw["model_state_dict"]!);
        using var fromPlain = ModelLoader.LoadSeedCheckpoint(plain, new ModelLoadOptions { Heads = 8 });
        using var fromCheckpoint = ModelLoader.LoadSeedCheckpoint(Fixtures.Path_("thinam-tiny", "tmodel.pt"), new ModelLoadOptions { Heads = 8 });
        Assert.True(fromPlain.Config.OutputLogSoftmax && fromPlain.Config.AttentionBias);
        var source = new IReadOnlyList<int>[] { new[] { 2, 31, 25, 14, 9, 8, 3 } };
        Assert.Equal(Decoding.Generator.Generate(fromCheckpoint, source)[0][0].Ids, Decoding.Generator.Generate(fromPlain, source)[0][0].Ids);
        var upstream = (System.Collections.Hashtable)PyTorchUnpickler.UnpickleStateDict(Seed)["model_state_dict"]!;
        Assert.False(SeedCheckpoint.IsAuthorScheme(upstream.Keys.Cast<string>()));
        Assert.True(SeedCheckpoint.IsAuthorScheme(((System.Collections.Hashtable)raw["model_state_dict"]!).Keys.Cast<string>()));
    }
}
