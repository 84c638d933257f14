using System.IO.Compression;
using System.Text;
using TorchSharp;
using TransformerInference.Decoding;
using TransformerInference.Loading;
using TransformerInference.Modeling;
using TransformerInference.Tokenization;
using Xunit;

namespace TransformerInference.Tests.Reliability;

/// <summary>Issue 9's findings, one test each: files and options that used to end the process, exhaust memory or
/// escape as untyped exceptions now give the contract's typed exceptions (or load), within the budget.</summary>
public class HostileInputTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ti-hostile-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string Seed => Fixtures.Path_("seed-tiny", "tmodel.pt");
    private static readonly Lazy<List<(string Name, byte[] Data, long[] Shape)>> SeedTensors = new(() => Hostile.StateDict(Seed));

    private string Write(string name, byte[] bytes)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    /// <summary>A copy of a fixture folder whose file <paramref name="file"/> is rewritten by <paramref name="change"/>.</summary>
    private string CopyFolder(string[] fixture, string? file = null, Func<string, string>? change = null)
    {
        var folder = Path.Combine(_dir, Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        foreach (var f in Directory.GetFiles(Fixtures.Path_(fixture)))
            File.Copy(f, Path.Combine(folder, Path.GetFileName(f)));
        if (file is not null) File.WriteAllText(Path.Combine(folder, file), change!(File.ReadAllText(Path.Combine(folder, file))));
        return folder;
    }

    private static IReadOnlyList<int> GreedyIds(TransformerModel model) =>
        Generator.Generate(model, new[] { new[] { 2, 5, 6, 7, 3 } }, new DecodingOptions { MaxNewTokens = 8 })[0][0].Ids;

    // 1. Process killers.

    [Fact]
    public void CheckpointWhoseExtrasContainThemselvesLoads()
    {
        using var reference = ModelLoader.LoadSeedCheckpoint(Seed, new ModelLoadOptions { Heads = 4 });
        var bytes = Hostile.Checkpoint(SeedTensors.Value, p =>
        {
            // 'optimizer_state_dict': a list that contains itself; 'epoch_log': a dict that contains itself.
            p.Str("optimizer_state_dict").Op(']').Op('q').Byte(200).Op('h').Byte(200).Op('a');
            p.Str("epoch_log").Op('}').Op('q').Byte(201).Str("self").Op('h').Byte(201).Op('s');
            // 'history': lists nested 200,000 deep.
            p.Str("history");
            for (var i = 0; i < 200_000; i++) p.Op(']');
            for (var i = 0; i < 199_999; i++) p.Op('a');
        });
        var path = Write("selfref.pt", bytes);
        TransformerModel? model = null;
        Assert.Null(Hostile.WithinBudget("self-referencing checkpoint", () => model = ModelLoader.LoadSeedCheckpoint(path, new ModelLoadOptions { Heads = 4 })));
        using (model) Assert.Equal(GreedyIds(reference), GreedyIds(model!));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(int.MinValue)]
    public void NonPositiveThreadCountsAreRejectedBeforeLibTorchSeesThem(int threads)
    {
        var e = Assert.Throws<ArgumentException>(() => TranslatorTests.Open("seed-tiny", new TranslatorOptions { Threads = threads }));
        Assert.Equal(nameof(TranslatorOptions.Threads), e.ParamName);
        using var model = ModelLoader.LoadSeedCheckpoint(Seed, new ModelLoadOptions { Heads = 4 });
        var tokenizer = TransformerInference.Tokenization.WordLevelTokenizer.Create(Fixtures.Path_("seed-tiny", "tokenizer_en.json"));
        Assert.Throws<ArgumentException>(() => Translator.Create(model, tokenizer, tokenizer, new TranslatorOptions { Threads = threads }));
    }

    [Fact]
    public void CudaWithoutAGpuIsNotSupported()
    {
        if (torch.cuda.is_available()) return; // the check only means something without a GPU
        // (torch.CUDA itself throws without CUDA; a device built by type reaches our check.)
        var cuda = new torch.Device(DeviceType.CUDA, 0);
        var e = Assert.Throws<NotSupportedException>(() => TranslatorTests.Open("seed-tiny", new TranslatorOptions { Device = cuda }));
        Assert.Contains("CUDA", e.Message);
        Assert.Throws<NotSupportedException>(() => ModelLoader.Load(Seed, new ModelLoadOptions { Device = cuda, Heads = 4 }));
    }

    // 2. Memory and time before validation.

    [Fact]
    public void SafetensorsHeaderLengthBeyondTheFileIsRejected()
    {
        var folder = CopyFolder(new[] { "variants", "serial-seed" });
        var weights = Path.Combine(folder, "model.safetensors");
        var bytes = File.ReadAllBytes(weights);
        BitConverter.GetBytes((ulong)2_000_000_000).CopyTo(bytes, 0);
        File.WriteAllBytes(weights, bytes);
        var e = Hostile.WithinBudget("2 GB safetensors header", () => ModelLoader.LoadFolder(folder));
        var c = Assert.IsType<CheckpointException>(e);
        Assert.Equal(weights, c.FilePath);
        Assert.Contains("header length", c.Message);
    }

    [Fact]
    public void SafetensorsShapeLargerThanItsBytesIsRejectedBeforeAllocation()
    {
        var folder = CopyFolder(new[] { "variants", "serial-seed" });
        var weights = Path.Combine(folder, "model.safetensors");
        var bytes = File.ReadAllBytes(weights);
        var headerLength = (int)BitConverter.ToUInt64(bytes, 0);
        var header = Encoding.UTF8.GetString(bytes, 8, headerLength);
        var i = header.IndexOf("\"shape\":[", StringComparison.Ordinal) + 9;
        var j = header.IndexOf(']', i);
        var huge = header[..i] + "1000000,1000000" + header[j..];
        huge = huge.PadRight(headerLength)[..Math.Max(headerLength, huge.Length)];
        var newHeader = Encoding.UTF8.GetBytes(huge);
        var rewritten = BitConverter.GetBytes((ulong)newHeader.Length).Concat(newHeader).Concat(bytes[(8 + headerLength)..]).ToArray();
        File.WriteAllBytes(weights, rewritten);
        var e = Hostile.WithinBudget("safetensors shape of 10^12 elements", () => ModelLoader.LoadFolder(folder));
        Assert.IsType<CheckpointException>(e);
    }

    [Theory]
    [InlineData("max_position_embeddings", "1000000000")]
    [InlineData("max_position_embeddings", "2147483647")]
    public void HugePositionCountsBuildTablesOnlyForTheLengthsUsed(string field, string value)
    {
        foreach (var family in new[] { "marian", "nllb" })
        {
            var folder = CopyFolder(new[] { "hf-tiny", family }, "config.json", json => ReplaceNumber(json, field, value));
            Assert.Null(Hostile.WithinBudget($"{family} {field} {value}", () =>
            {
                using var translator = Translator.Load(folder, new TranslatorOptions { TargetLanguage = family == "nllb" ? "npi_Deva" : null });
                Assert.NotNull(translator.Translate("I love you so much", new DecodingOptions { MaxNewTokens = 20 }));
            }));
        }
    }

    [Theory]
    [InlineData("decoder_layers", "1000000000")]
    [InlineData("encoder_layers", "2147483647")]
    [InlineData("d_model", "1048576")]
    [InlineData("encoder_ffn_dim", "2147483647")]
    [InlineData("vocab_size", "2000000000")]
    public void ConfigSizesBeyondTheWeightsAreRejectedBeforeAllocation(string field, string value)
    {
        var folder = CopyFolder(new[] { "hf-tiny", "marian" }, "config.json", json => ReplaceNumber(json, field, value));
        var e = Hostile.WithinBudget($"{field} {value}", () => ModelLoader.LoadFolder(folder));
        Assert.IsType<CheckpointException>(e);
    }

    [Fact]
    public void SeedFolderConfigLayersBeyondTheWeightsAreRejected()
    {
        var folder = CopyFolder(new[] { "variants", "serial-seed" }, "config.json", json => ReplaceNumber(json, "decoder_layers", "1000000000"));
        var e = Hostile.WithinBudget("decoder_layers 1e9", () => ModelLoader.LoadFolder(folder));
        Assert.IsType<CheckpointException>(e);
    }

    [Theory]
    [InlineData(10_000)]
    [InlineData(int.MaxValue)]
    [InlineData(DecodingOptions.MaxBeamSize + 1)]
    public void BeamSizesBeyondTheDocumentedMaximumAreRejected(int beam)
    {
        using var model = ModelLoader.LoadSeedCheckpoint(Seed, new ModelLoadOptions { Heads = 4 });
        var e = Assert.Throws<ArgumentException>(() => Generator.Generate(model, new[] { new[] { 2, 5, 3 } }, new DecodingOptions { BeamSize = beam }));
        Assert.Equal(nameof(DecodingOptions.BeamSize), e.ParamName);
        Assert.NotEmpty(Generator.Generate(model, new[] { new[] { 2, 5, 3 } },
            new DecodingOptions { BeamSize = DecodingOptions.MaxBeamSize, MaxNewTokens = 2 }));
    }

    [Fact]
    public void HugeNumBeamsInGenerationConfigNamesTheFile()
    {
        var folder = CopyFolder(new[] { "hf-tiny", "marian" }, "generation_config.json", json => ReplaceNumber(json, "num_beams", "2147483647"));
        var e = Hostile.WithinBudget("num_beams int.MaxValue", () => Translator.Load(folder));
        var c = Assert.IsType<CheckpointException>(e);
        Assert.EndsWith("generation_config.json", c.FilePath);
        Assert.Contains("BeamSize", c.Message);
    }

    // 3. Untyped exceptions.

    public static TheoryData<string, string> JsonFiles => new()
    {
        { "marian", "config.json" },
        { "marian", "vocab.json" },
        { "marian", "tokenizer_config.json" },
        { "marian", "generation_config.json" },
        { "m2m100", "tokenizer_config.json" },
    };

    [Theory, MemberData(nameof(JsonFiles))]
    public void InvalidUtf8InsideAJsonStringIsInvalidData(string family, string file)
    {
        foreach (var bad in new[] { new byte[] { 0xC3, 0x28 }, new byte[] { 0xFF }, "\\ud800"u8.ToArray() })
        {
            var folder = CopyFolder(new[] { "hf-tiny", family });
            var path = Path.Combine(folder, file);
            var bytes = File.ReadAllBytes(path);
            var quote = Array.IndexOf(bytes, (byte)'"', Array.IndexOf(bytes, (byte)':') + 1); // the first string value
            var corrupted = bytes[..(quote + 1)].Concat(bad).Concat(bytes[(quote + 1)..]).ToArray();
            File.WriteAllBytes(path, corrupted);
            var e = Hostile.WithinBudget($"{file} with invalid text", () => Translator.Load(folder, new TranslatorOptions { TargetLanguage = family == "marian" ? null : "ne" }));
            Assert.True(e is InvalidDataException or CheckpointException, $"{file}: {e?.GetType().Name}: {e?.Message}");
            Assert.Contains(file, e!.Message);
        }
    }

    [Fact]
    public void InvalidUtf8InTokenizerJsonIsInvalidData()
    {
        var bytes = File.ReadAllBytes(Fixtures.Path_("seed-tiny", "tokenizer_en.json"));
        var vocab = Encoding.UTF8.GetString(bytes).IndexOf("\"vocab\"", StringComparison.Ordinal);
        var quote = Array.IndexOf(bytes, (byte)'"', vocab + 10);
        var path = Write("tokenizer.json", bytes[..(quote + 1)].Concat(new byte[] { 0xE0, 0x80 }).Concat(bytes[(quote + 1)..]).ToArray());
        var e = Assert.Throws<InvalidDataException>(() => TransformerInference.Tokenization.WordLevelTokenizer.Create(path));
        Assert.Contains(path, e.Message);
    }

    [Theory]
    [InlineData("\"num_madeup_words\": \"eight\"", "num_madeup_words")]
    [InlineData("\"num_madeup_words\": 2147483647", "num_madeup_words")]
    [InlineData("\"added_tokens_decoder\": {\"5\": \"a string\"}", "added_tokens_decoder")]
    public void WrongTypesInATokenizerConfigAreInvalidData(string entry, string field)
    {
        var folder = CopyFolder(new[] { "hf-tiny", "m2m100" }, "tokenizer_config.json", json =>
        {
            var doc = System.Text.Json.Nodes.JsonNode.Parse(json)!.AsObject();
            var replacement = System.Text.Json.Nodes.JsonNode.Parse("{" + entry + "}")!.AsObject();
            foreach (var (k, v) in replacement.ToList())
            {
                replacement.Remove(k);
                doc[k] = v;
            }
            return doc.ToJsonString();
        });
        var e = Assert.Throws<InvalidDataException>(() => TransformerInference.Tokenization.SentencePieceTranslationTokenizer.Create(folder));
        Assert.Contains(field, e.Message);
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(47)] // seed-tiny's source vocabulary has 47 ids
    [InlineData(int.MaxValue)]
    public void IdsOutsideTheVocabularyAreRejectedAtTheModelBoundary(int id)
    {
        using var model = ModelLoader.LoadSeedCheckpoint(Seed, new ModelLoadOptions { Heads = 4 });
        var e = Assert.Throws<ArgumentException>(() => Generator.Generate(model, new[] { new[] { 2, id, 3 } }));
        Assert.Contains("[0, 47)", e.Message);
        using var ids = torch.tensor(new long[] { 2, id, 3 }, new long[] { 1, 3 });
        Assert.Throws<ArgumentException>(() => model.Start(ids, 4));
        using var cache = model.Start(torch.tensor(new long[] { 2, 5, 3 }, new long[] { 1, 3 }), 4);
        using var step = torch.tensor(new long[] { id == 47 ? 69 : id }, new long[] { 1, 1 }); // 69 target ids
        Assert.Throws<ArgumentException>(() => model.Step(step, cache));
    }

    [Fact]
    public void TheModelsStepApiAndTheCacheRejectBadTensorsTyped()
    {
        // TransformerModel.Start/Step and KvCache.Reorder are public: a wrong shape, row count, length or row index
        // used to reach LibTorch (ExternalException) or the cache (InvalidOperationException, NullReferenceException).
        using var model = ModelLoader.LoadSeedCheckpoint(Seed, new ModelLoadOptions { Heads = 4 });
        torch.Tensor Ids(long rows, long length) => torch.full(new[] { rows, length }, 5L, torch.ScalarType.Int64);
        Assert.Throws<ArgumentNullException>(() => model.Start(null!, 4));
        Assert.Contains("empty", Assert.Throws<ArgumentException>(() => model.Start(Ids(0, 3), 4)).Message);
        Assert.Contains("empty", Assert.Throws<ArgumentException>(() => model.Start(Ids(1, 0), 4)).Message);
        using (var cache = model.Start(Ids(1, 3), 1))
        {
            Assert.Contains("2 rows", Assert.Throws<ArgumentException>(() => model.Step(Ids(2, 1), cache)).Message);
            Assert.Throws<ArgumentNullException>(() => model.Step(Ids(1, 1), null!));
            model.Step(Ids(1, 1), cache).Dispose();
            Assert.Contains("holds 1 positions", Assert.Throws<ArgumentException>(() => model.Step(Ids(1, 1), cache)).Message);
        }
        using (var cache = model.Start(Ids(2, 3), 4))
        {
            Assert.Contains("[0, 2)", Assert.Throws<ArgumentException>(() => cache.Reorder(torch.tensor(new long[] { 0, 5 }))).Message);
            Assert.Contains("[0, 2)", Assert.Throws<ArgumentException>(() => cache.Reorder(torch.tensor(new long[] { -7 }))).Message);
            Assert.Throws<ArgumentException>(() => cache.Reorder(torch.tensor(new float[] { 0 })));
            Assert.Throws<ArgumentException>(() => cache.Reorder(torch.zeros(new long[] { 1, 1 }, torch.ScalarType.Int64)));
            Assert.Throws<ArgumentNullException>(() => cache.Reorder(null!));
            cache.Reorder(torch.tensor(new long[] { 1, 1, 0 })); // in range: repeats and growth allowed
            Assert.Equal(3, cache.BatchSize);
        }
        var disposed = model.Start(Ids(1, 3), 4);
        disposed.Dispose();
        Assert.Throws<ObjectDisposedException>(() => model.Step(Ids(1, 1), disposed));
        Assert.Throws<ObjectDisposedException>(() => disposed.Reorder(torch.tensor(new long[] { 0 })));
    }

    [Fact]
    public void NullRowsAreArgumentNull()
    {
        using var model = ModelLoader.LoadSeedCheckpoint(Seed, new ModelLoadOptions { Heads = 4 });
        Assert.Throws<ArgumentNullException>(() => Generator.Generate(model, new IReadOnlyList<int>[] { new[] { 2, 5, 3 }, null! }));
        Assert.Throws<ArgumentNullException>(() => Generator.Generate(model, null!));
    }

    [Fact]
    public void ADisposedModelOrTranslatorIsObjectDisposed()
    {
        var model = ModelLoader.LoadSeedCheckpoint(Seed, new ModelLoadOptions { Heads = 4 });
        model.Dispose();
        Assert.Throws<ObjectDisposedException>(() => Generator.Generate(model, new[] { new[] { 2, 5, 3 } }));
        // A translator is not built on a disposed model (the error comes at Create, not at the first call).
        var tokenizer = SentencePieceTranslationTokenizer.Create(Fixtures.Path_("hf-tiny", "marian"));
        Assert.Throws<ObjectDisposedException>(() => Translator.Create(model, tokenizer));
        var words = WordLevelTokenizer.Create(Fixtures.Path_("seed-tiny", "tokenizer_en.json"));
        Assert.Throws<ObjectDisposedException>(() => Translator.Create(model, words, words));
        var translator = TranslatorTests.Open("seed-tiny");
        translator.Dispose();
        Assert.Throws<ObjectDisposedException>(() => translator.Translate("I love you"));
    }

    // 4. Bad options.

    [Theory]
    [InlineData(torch.ScalarType.Int32)]
    [InlineData(torch.ScalarType.Bool)]
    [InlineData(torch.ScalarType.Int64)]
    public void NonFloatDTypesAreRejectedBeforeLoading(torch.ScalarType dtype)
    {
        var e = Assert.Throws<ArgumentException>(() => TranslatorTests.Open("seed-tiny", new TranslatorOptions { DType = dtype }));
        Assert.Equal("DType", e.ParamName);
        Assert.Throws<ArgumentException>(() => ModelLoader.Load(Seed, new ModelLoadOptions { DType = dtype }));
    }

    [Theory]
    [InlineData(nameof(DecodingOptions.LengthPenalty), double.NaN)]
    [InlineData(nameof(DecodingOptions.LengthPenalty), double.PositiveInfinity)]
    [InlineData(nameof(DecodingOptions.Temperature), double.PositiveInfinity)]
    [InlineData(nameof(DecodingOptions.Temperature), double.NaN)]
    [InlineData(nameof(DecodingOptions.RepetitionPenalty), double.PositiveInfinity)]
    [InlineData(nameof(DecodingOptions.TopP), double.NaN)]
    public void NonFiniteNumbersAreRejected(string name, double value)
    {
        var options = name switch
        {
            nameof(DecodingOptions.LengthPenalty) => new DecodingOptions { LengthPenalty = value, BeamSize = 2 },
            nameof(DecodingOptions.Temperature) => new DecodingOptions { Temperature = value, Sample = true },
            nameof(DecodingOptions.RepetitionPenalty) => new DecodingOptions { RepetitionPenalty = value },
            _ => new DecodingOptions { TopP = value, Sample = true },
        };
        Assert.Equal(name, Assert.Throws<ArgumentException>(() => options.Validate()).ParamName);
        using var translator = TranslatorTests.Open("seed-tiny");
        Assert.Throws<ArgumentException>(() => translator.Translate("I love you", options));
        Assert.Throws<ArgumentException>(() => TranslatorTests.Open("seed-tiny", new TranslatorOptions { Decoding = options }));
    }

    [Fact]
    public void MaxNewTokensBeyondTheModelNamesTheOption()
    {
        using var model = ModelLoader.LoadSeedCheckpoint(Seed, new ModelLoadOptions { Heads = 4 });
        var e = Assert.Throws<ArgumentException>(() => new DecodingOptions { MaxNewTokens = 100_000 }.ValidateFor(model));
        Assert.Equal(nameof(DecodingOptions.MaxNewTokens), e.ParamName);
        var options = new DecodingOptions { MaxNewTokens = 100_000 };
        var g = Assert.Throws<ArgumentException>(() => Generator.Generate(model, new[] { new[] { 2, 5, 3 } }, options));
        Assert.Equal(nameof(DecodingOptions.MaxNewTokens), g.ParamName);
        using var translator = TranslatorTests.Open("seed-tiny");
        var t = Assert.Throws<ArgumentException>(() => translator.Translate("I love you", options));
        Assert.Equal(nameof(DecodingOptions.MaxNewTokens), t.ParamName);
    }

    [Theory]
    [InlineData("{\"h\": \"four\"}")]
    [InlineData("[1, 2]")]
    [InlineData("{\"h\": -4}")]
    [InlineData("{\"h\": 4")]
    public void MalformedModelArgsIsACheckpointErrorNamingTheFile(string json)
    {
        var checkpoint = Write("tmodel.pt", Array.Empty<byte>());
        File.WriteAllText(Path.Combine(_dir, "model_args.json"), json);
        var e = Assert.Throws<CheckpointException>(() => ModelLoader.ReadSeedHeads(checkpoint));
        Assert.EndsWith("model_args.json", e.FilePath);
        File.WriteAllText(Path.Combine(_dir, "model_args.json"), "{\"h\": 4}");
        Assert.Equal(4, ModelLoader.ReadSeedHeads(checkpoint));
    }

    [Fact]
    public void AMissingModelFolderSaysSo()
    {
        var e = Assert.Throws<DirectoryNotFoundException>(() => Translator.Load(Path.Combine(_dir, "nope")));
        Assert.Contains("nope", e.Message);
        Assert.Contains("does not exist", e.Message);
    }

    // Archives.

    [Fact]
    public void AZipBombIsRefusedBeforeItExpands()
    {
        // 512 MiB of zeros deflate to about 0.5 MiB: a storage whose element count matches the expanded size.
        var path = Path.Combine(_dir, "bomb.pt");
        const long elements = 128L << 20;
        using (var file = File.Create(path))
        using (var zip = new ZipArchive(file, ZipArchiveMode.Create))
        {
            var p = new PickleWriter().Op('}').Mark().Str("encoder.weight").Tensor("0", elements, new[] { elements }).Op('u').Stop();
            using (var s = zip.CreateEntry("archive/data.pkl").Open()) s.Write(p.ToArray());
            using var data = zip.CreateEntry("archive/data/0", CompressionLevel.Fastest).Open();
            var zeros = new byte[1 << 20];
            for (var i = 0; i < (int)(elements * 4 >> 20); i++) data.Write(zeros);
        }
        var e = Hostile.WithinBudget("zip bomb", () => ModelLoader.LoadSeedCheckpoint(path));
        var c = Assert.IsType<CheckpointException>(e);
        Assert.Contains("zip bomb", c.Message);
    }

    [Fact]
    public void ZipSlipNamesAreNeverFollowedOrWritten()
    {
        var escape = Path.Combine(_dir, "escaped.txt");
        var tensor = SeedTensors.Value[0];
        var p = new PickleWriter().Op('}').Mark().Str(tensor.Name).Tensor("0", tensor.Data.Length / 4, tensor.Shape).Op('u').Stop();
        var bytes = Hostile.Zip(new[]
        {
            ("archive/data.pkl", p.ToArray()),
            ("archive/data/0", tensor.Data),
            ("../../../../" + escape.TrimStart('/'), "owned"u8.ToArray()),
            (escape, "owned"u8.ToArray()),
        });
        var path = Write("slip.pt", bytes);
        var tensors = TorchZip.ReadStateDict(path);
        try
        {
            Assert.Equal(tensor.Data, tensors[tensor.Name].contiguous().bytes.ToArray());
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
        Assert.False(File.Exists(escape));
    }

    // The budget every case above (and every fuzz case) is held to: each kind of violation is caught.

    [Fact]
    public void TheBudgetCheckCatchesForeignExceptionsOverrunsAndMemoryRises()
    {
        Assert.Null(Hostile.Check("contract", () => throw new CheckpointException("bad", "f")).Problem);
        Assert.Contains("outside the exception contract",
            Hostile.Check("foreign", () => throw new InvalidOperationException("x")).Problem);
        Assert.Contains("outside the exception contract",
            Hostile.Check("native", () => throw new System.Runtime.InteropServices.ExternalException("x")).Problem);
        Assert.Contains("took", Hostile.Check("slow", () => Thread.Sleep(300), timeBudget: TimeSpan.FromMilliseconds(50)).Problem);
        Assert.Contains("resident memory rose", Hostile.Check("hungry", () =>
        {
            var block = new byte[256 << 20];
            for (var i = 0; i < block.Length; i += 4096) block[i] = 1;
            GC.KeepAlive(block);
        }, memoryBudget: 64L << 20).Problem);
        GC.Collect();
        Assert.Equal(320644L * 1024, Hostile.StatusBytes("VmHWM:\t  320644 kB"));
        Assert.Equal(12345678L * 1024, Hostile.StatusBytes("VmHWM:\t12345678 kB")); // 12 GiB: no space after the tab
    }

    [Fact]
    public void ChildProcessesAreSeen()
    {
        if (!OperatingSystem.IsLinux()) return;
        using var child = System.Diagnostics.Process.Start("sleep", "17.25")!;
        try
        {
            // Between fork and exec the child still shows the test host's command line: poll until exec is seen.
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
            while (!Hostile.ChildCommandLines().Any(c => c.Contains("17.25", StringComparison.Ordinal)) && DateTime.UtcNow < deadline)
                Thread.Sleep(20);
            Assert.Contains(Hostile.ChildCommandLines(), c => c.Contains("17.25", StringComparison.Ordinal));
        }
        finally
        {
            child.Kill();
            child.WaitForExit();
        }
    }

    internal static string ReplaceNumber(string json, string field, string value)
    {
        var doc = System.Text.Json.Nodes.JsonNode.Parse(json)!.AsObject();
        doc[field] = System.Text.Json.Nodes.JsonNode.Parse(value);
        return doc.ToJsonString();
    }
}
