using System.Text;
using TransformerInference.Decoding;
using TransformerInference.Loading;
using TransformerInference.Modeling;
using Xunit;

namespace TransformerInference.Tests.Reliability;

/// <summary>
/// Crafted pickles, one per path Python's unpickler would take to run code: <c>os.system</c>, <c>subprocess</c>,
/// <c>builtins.eval</c>/<c>exec</c> reached through GLOBAL, STACK_GLOBAL, REDUCE, INST, OBJ, NEWOBJ, NEWOBJ_EX and
/// BUILD, and persistent ids pointing outside the archive. Each payload, unpickled by Python, creates a marker file
/// (and the subprocess ones leave a <c>sleep</c> running); each is placed beside the model in a real torch zip
/// checkpoint (it must load and translate as without it), in place of a weight and as the whole pickle (a
/// <see cref="CheckpointException"/>), and as a bare legacy pickle (not accepted: a <see cref="CheckpointException"/>).
/// Every case then checks that the marker does not exist and that no child process runs with it on its command line.
/// </summary>
public class CraftedPickleTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ti-pickle-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string Seed => Fixtures.Path_("seed-tiny", "tmodel.pt");
    private static readonly Lazy<List<(string Name, byte[] Data, long[] Shape)>> SeedTensors = new(() => Hostile.StateDict(Seed));
    private static readonly Lazy<int[]> ReferenceIds = new(() =>
    {
        using var model = ModelLoader.LoadSeedCheckpoint(Seed, new ModelLoadOptions { Heads = 4 });
        return GreedyIds(model);
    });

    private static int[] GreedyIds(TransformerModel model) =>
        Generator.Generate(model, new[] { new[] { 2, 5, 6, 7, 3 } }, new DecodingOptions { MaxNewTokens = 8 })[0][0].Ids.ToArray();

    private string Marker => Path.Combine(_dir, "owned");

    /// <summary>Writes one payload value (no PROTO, no STOP). Each is a working exploit: written as a bare pickle
    /// (PROTO 2, payload, STOP), Python 3.11's <c>pickle.loads</c> created the marker for every one of them.</summary>
    private static void Payload(PickleWriter w, string kind, string marker)
    {
        var touch = $"touch {marker}";
        var evalCode = $"__import__('os').system('{touch}')";
        var execCode = $"open('{marker}', 'w').close()";
        switch (kind)
        {
            case "os.system GLOBAL REDUCE":
                w.Global("os", "system").Mark().Str(touch).Tuple().Reduce();
                break;
            case "posix.system GLOBAL REDUCE": // how Python itself pickles os.system on Linux
                w.Global("posix", "system").Mark().Str(touch).Tuple().Reduce();
                break;
            case "subprocess.Popen GLOBAL REDUCE":
                w.Global("subprocess", "Popen").Mark().Mark().Str("sh").Str("-c").Str($"{touch}; sleep 30").Op('l').Tuple().Reduce();
                break;
            case "subprocess.check_output STACK_GLOBAL REDUCE":
                w.StackGlobal("subprocess", "check_output").Mark().Mark().Str("touch").Str(marker).Op('l').Tuple().Reduce();
                break;
            case "builtins.eval GLOBAL REDUCE":
                w.Global("builtins", "eval").Mark().Str(evalCode).Tuple().Reduce();
                break;
            case "builtins.exec STACK_GLOBAL REDUCE":
                w.StackGlobal("builtins", "exec").Mark().Str(execCode).Tuple().Reduce();
                break;
            case "builtins.eval INST":
                w.Mark().Str(evalCode).Inst("builtins", "eval");
                break;
            case "builtins.exec OBJ":
                w.Mark().Global("builtins", "exec").Str(execCode).Op('o');
                break;
            case "os.system NEWOBJ functools.partial":
                // partial.__new__(partial, os.system, cmd) builds the call; the REDUCE after it makes it.
                w.Global("functools", "partial").Mark().Global("os", "system").Str(touch).Tuple().Op(0x81).Op(')').Reduce();
                break;
            case "os.system NEWOBJ_EX functools.partial":
                w.Global("functools", "partial").Mark().Global("os", "system").Str(touch).Tuple().Op('}').Op(0x92).Op(')').Reduce();
                break;
            case "os.system BUILD __setstate__":
                // BUILD {'__setstate__': os.system} on a SimpleNamespace, then BUILD cmd: Python calls os.system(cmd).
                w.Global("types", "SimpleNamespace").Op(')').Reduce()
                    .Op('}').Str("__setstate__").Global("os", "system").Op('s').Op('b')
                    .Str(touch).Op('b');
                break;
            default: throw new ArgumentOutOfRangeException(nameof(kind), kind, null);
        }
    }

    public static TheoryData<string> Payloads => new()
    {
        "os.system GLOBAL REDUCE", "posix.system GLOBAL REDUCE", "subprocess.Popen GLOBAL REDUCE",
        "subprocess.check_output STACK_GLOBAL REDUCE", "builtins.eval GLOBAL REDUCE", "builtins.exec STACK_GLOBAL REDUCE",
        "builtins.eval INST", "builtins.exec OBJ", "os.system NEWOBJ functools.partial", "os.system NEWOBJ_EX functools.partial",
        "os.system BUILD __setstate__",
    };

    /// <summary>Nothing ran: no marker file, no child process naming it.</summary>
    private void AssertNothingRan()
    {
        Assert.False(File.Exists(Marker), "a crafted pickle ran a command");
        Assert.DoesNotContain(Hostile.ChildCommandLines(), c => c.Contains(Marker, StringComparison.Ordinal));
    }

    private string Write(string name, byte[] bytes)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static ModelLoadOptions Heads4 => new() { Heads = 4 };

    [Theory, MemberData(nameof(Payloads))]
    public void BesideTheModelInATorchZipItIsIgnored(string kind)
    {
        var path = Write("beside.pt", Hostile.Checkpoint(SeedTensors.Value, p => Payload(p.Str("optimizer_state_dict"), kind, Marker)));
        TransformerModel? model = null;
        Assert.Null(Hostile.WithinBudget(kind, () => model = ModelLoader.LoadSeedCheckpoint(path, Heads4)));
        using (model) Assert.Equal(ReferenceIds.Value, GreedyIds(model!));
        AssertNothingRan();
    }

    [Theory, MemberData(nameof(Payloads))]
    public void InPlaceOfAWeightItIsACheckpointError(string kind)
    {
        var tensors = SeedTensors.Value;
        var replaced = tensors[0].Name; // encoder.layers.0.self_attention_block.w_q.weight
        var p = new PickleWriter();
        p.Op('}').Mark();
        Payload(p.Str(replaced), kind, Marker);
        for (var i = 1; i < tensors.Count; i++)
            p.Str(tensors[i].Name).Tensor(i.ToString(), tensors[i].Data.Length / 4, tensors[i].Shape);
        p.Op('u').Stop();
        var entries = new List<(string, byte[])> { ("archive/data.pkl", p.ToArray()) };
        for (var i = 1; i < tensors.Count; i++) entries.Add(($"archive/data/{i}", tensors[i].Data));
        var path = Write("inplace.pt", Hostile.Zip(entries));
        var e = Hostile.WithinBudget(kind, () => ModelLoader.LoadSeedCheckpoint(path, Heads4).Dispose());
        var c = Assert.IsType<CheckpointException>(e);
        Assert.Equal(path, c.FilePath);
        AssertNothingRan();
    }

    [Theory, MemberData(nameof(Payloads))]
    public void AsTheWholePickleItIsACheckpointError(string kind)
    {
        var p = new PickleWriter();
        Payload(p, kind, Marker);
        var path = Write("whole.pt", Hostile.Zip(new[] { ("archive/data.pkl", p.Stop().ToArray()), ("archive/version", "3\n"u8.ToArray()) }));
        var e = Hostile.WithinBudget(kind, () => ModelLoader.LoadSeedCheckpoint(path, Heads4).Dispose());
        var c = Assert.IsType<CheckpointException>(e);
        Assert.Contains("not a dict", c.Message);
        AssertNothingRan();
    }

    [Theory, MemberData(nameof(Payloads))]
    public void AsABareLegacyPickleItIsRefusedUnread(string kind)
    {
        // torch.save's legacy format is a bare pickle stream: not accepted, as a seed checkpoint or a Hugging Face
        // folder's pytorch_model.bin.
        var p = new PickleWriter();
        p.Op('}').Str("encoder.weight");
        Payload(p, kind, Marker);
        var bytes = p.Op('s').Stop().ToArray();
        var path = Write("legacy.pt", bytes);
        var e = Hostile.WithinBudget(kind, () => ModelLoader.LoadSeedCheckpoint(path, Heads4).Dispose());
        Assert.Contains("legacy", Assert.IsType<CheckpointException>(e).Message);

        var folder = Path.Combine(_dir, "hf");
        Directory.CreateDirectory(folder);
        foreach (var f in Directory.GetFiles(Fixtures.Path_("hf-tiny", "marian")))
            if (Path.GetFileName(f) != "model.safetensors") File.Copy(f, Path.Combine(folder, Path.GetFileName(f)));
        var bin = Path.Combine(folder, "pytorch_model.bin");
        File.WriteAllBytes(bin, bytes);
        var hf = Hostile.WithinBudget(kind, () => ModelLoader.LoadFolder(folder).Dispose());
        Assert.Equal(bin, Assert.IsType<CheckpointException>(hf).FilePath);
        AssertNothingRan();
    }

    // Persistent ids name storages; one pointing outside the archive must never be followed.

    public static TheoryData<string> OutsideKeys => new()
    {
        "../../etc/passwd", "/etc/passwd", "../../../../../../../../etc/passwd", "..", "data/../../0", "0/../../outside",
        "C:\\Windows\\win.ini", "outside\u0000", "",
    };

    [Theory, MemberData(nameof(OutsideKeys))]
    public void BinPersIdOutsideTheArchiveIsRefused(string key)
    {
        var tensor = SeedTensors.Value[0];
        // A file the key might reach, holding exactly the bytes the storage needs.
        File.WriteAllBytes(Path.Combine(_dir, "outside"), tensor.Data);
        var p = new PickleWriter().Op('}').Mark().Str(tensor.Name).Tensor(key, tensor.Data.Length / 4, tensor.Shape).Op('u').Stop();
        var path = Write("pid.pt", Hostile.Zip(new[] { ("archive/data.pkl", p.ToArray()), ("archive/data/0", tensor.Data) }));
        var e = Hostile.WithinBudget(key, () => TorchZip.ReadStateDict(path));
        var c = Assert.IsType<CheckpointException>(e);
        Assert.Contains("storage key", c.Message);
    }

    [Fact]
    public void ZipSlipEntryNamedByAPersistentIdIsRefused()
    {
        // The archive holds the storage under a zip-slip name, and the persistent id names it: neither followed nor
        // written anywhere.
        var tensor = SeedTensors.Value[0];
        var escape = Path.Combine(_dir, "escaped");
        var slip = "archive/data/../../../../../../.." + escape;
        var p = new PickleWriter().Op('}').Mark().Str(tensor.Name)
            .Tensor("../../../../../../.." + escape, tensor.Data.Length / 4, tensor.Shape).Op('u').Stop();
        var path = Write("slip.pt", Hostile.Zip(new[] { ("archive/data.pkl", p.ToArray()), (slip, tensor.Data) }));
        var e = Hostile.WithinBudget("zip-slip storage", () => TorchZip.ReadStateDict(path));
        Assert.IsType<CheckpointException>(e);
        Assert.False(File.Exists(escape));
    }

    [Fact]
    public void TextPersIdIsRefused()
    {
        // PERSID (protocol 0): the id is a text line; torch.save never writes it.
        var tensor = SeedTensors.Value[0];
        var p = new PickleWriter();
        p.Op('}').Mark().Str(tensor.Name).Global("torch._utils", "_rebuild_tensor_v2").Mark().PersId("../../etc/passwd")
            .Int(0).Ints(tensor.Shape).Ints(PickleWriter.ContiguousStrides(tensor.Shape)).Op(0x89)
            .Global("collections", "OrderedDict").Op(')').Reduce().Tuple().Reduce().Op('u').Stop();
        var path = Write("persid.pt", Hostile.Zip(new[] { ("archive/data.pkl", p.ToArray()), ("archive/data/0", tensor.Data) }));
        var e = Hostile.WithinBudget("PERSID", () => TorchZip.ReadStateDict(path));
        Assert.IsType<CheckpointException>(e);
    }

    [Theory]
    [InlineData("module")]
    [InlineData("file")]
    public void PersistentIdsOtherThanStoragesAreRefused(string what)
    {
        // ('module', 'os', 'system', ...): a persistent id that a permissive persistent_load might import or open.
        var p = new PickleWriter();
        p.Op('}').Mark().Str("w").Mark().Str(what).Str("os").Str("system").Str("cpu").Int(1).Tuple().Op('Q').Op('u').Stop();
        var path = Write("other.pt", Hostile.Zip(new[] { ("archive/data.pkl", p.ToArray()) }));
        var e = Hostile.WithinBudget(what, () => TorchZip.ReadStateDict(path));
        Assert.Contains("persistent id", Assert.IsType<CheckpointException>(e).Message);
    }
}
