using System.Globalization;
using System.Text.Json;
using TransformerInference.Cli;
using TransformerInference.Decoding;
using Xunit;

namespace TransformerInference.Tests;

/// <summary>The <c>transformer-inference</c> tool, run in process through its entry point: one test per command-line
/// defect of issue 10 (flags translated as text, stdin, silent conflicts, n-best indices, flag names in errors,
/// help defaults, batching of ids…).</summary>
[Collection(LibTorchThreadsCollection.Name)]
public class CliTests
{
    private static readonly string Seed = Fixtures.Path_("seed-tiny");
    private static readonly string[] SeedModel =
    {
        "--checkpoint", Path.Combine(Seed, "tmodel.pt"),
        "--src-tokenizer", Path.Combine(Seed, "tokenizer_en.json"), "--tgt-tokenizer", Path.Combine(Seed, "tokenizer_ne.json"),
    };

    private sealed record Run(int Code, string[] Out, string Err);

    private static Run Cli(string stdin, params string[] args)
    {
        var stdout = new StringWriter { NewLine = "\n" };
        var stderr = new StringWriter { NewLine = "\n" };
        var code = CliApp.RunAsync(args, new StringReader(stdin), stdout, stderr).GetAwaiter().GetResult();
        var lines = stdout.ToString().Split('\n');
        return new Run(code, lines.Length > 0 && lines[^1] == "" ? lines[..^1] : lines, stderr.ToString());
    }

    private static Run Translate(string stdin, params string[] args) => Cli(stdin, new[] { "translate" }.Concat(SeedModel).Concat(args).ToArray());

    private static Translator SeedTranslator() => Translator.Load(Path.Combine(Seed, "tmodel.pt"), Path.Combine(Seed, "tokenizer_en.json"),
        Path.Combine(Seed, "tokenizer_ne.json"));

    [Theory]
    [InlineData("-b", "4")]
    [InlineData("-x", "I love you so much")]
    [InlineData("--bogus", "I love you so much")]
    public void UnknownFlagsAreUsageErrorsNotSentences(string flag, string next)
    {
        var r = Translate("", flag, next);
        Assert.Equal(2, r.Code);
        Assert.Empty(r.Out);
        Assert.Contains($"unknown option {flag}", r.Err);
    }

    [Fact]
    public void TextAfterDoubleDashMayStartWithADash()
    {
        var r = Translate("", "--", "-b");
        Assert.Equal(0, r.Code);
        Assert.Single(r.Out);
    }

    [Fact]
    public void StdinIsReadWhenNoTextIsGivenOneLinePerLine()
    {
        var input = new[] { "I love you so much", "", "we help them ." };
        var r = Translate(string.Join("\n", input) + "\n");
        Assert.Equal(0, r.Code);
        using var translator = SeedTranslator();
        Assert.Equal(translator.Translate(input), r.Out);
        Assert.Equal("", r.Out[1]); // an empty line gives an empty line
    }

    [Fact]
    public void StreamRefusesJsonlAndNBestInsteadOfIgnoringThem()
    {
        var jsonl = Translate("", "--stream", "--format", "jsonl", "x");
        Assert.Equal(2, jsonl.Code);
        Assert.Contains("--stream", jsonl.Err);
        Assert.Contains("--format jsonl", jsonl.Err);
        var nBest = Translate("", "--stream", "--beam", "4", "--n-best", "2", "x");
        Assert.Equal(2, nBest.Code);
        Assert.Contains("--n-best", nBest.Err);
    }

    [Fact]
    public void StreamWritesTheSameLinesAsABatch()
    {
        var r = Translate("I love you so much\nwe help them .\n", "--stream");
        Assert.Equal(0, r.Code);
        Assert.Equal(Translate("I love you so much\nwe help them .\n").Out, r.Out);
    }

    [Fact]
    public void NBestTextLinesCarryTheSentenceIndexAndTheScore()
    {
        var input = new[] { "we help them .", "I love you so much" };
        var r = Translate(string.Join("\n", input), "--beam", "3", "--n-best", "2");
        Assert.Equal(0, r.Code);
        using var translator = SeedTranslator();
        var expected = translator.TranslateDetailed(input, new DecodingOptions { BeamSize = 3, NBest = 2 })
            .SelectMany((t, i) => t.Hypotheses.Select(h => $"{i} ||| {h.Text} ||| {h.Hypothesis.Score.ToString("F4", CultureInfo.InvariantCulture)}"));
        Assert.Equal(expected, r.Out);
    }

    [Fact]
    public void LanguagesAreRejectedForModelsWithoutThem()
    {
        var seed = Translate("", "--src-lang", "en", "x");
        Assert.Equal(2, seed.Code);
        Assert.Contains("--src-lang", seed.Err);
        var marian = Cli("", "translate", "--model", Fixtures.Path_("hf-tiny", "marian"), "--tgt-lang", "ne", "x");
        Assert.Equal(2, marian.Code);
        Assert.Contains("--tgt-lang", marian.Err);
        Assert.Empty(marian.Out);
    }

    [Fact]
    public void AnUnknownLanguageIsRejectedOnceNotPerLine()
    {
        var r = Cli("a\nb\nc\n", "translate", "--model", Fixtures.Path_("hf-tiny", "m2m100"), "--tgt-lang", "xx");
        Assert.Equal(2, r.Code);
        Assert.Empty(r.Out);
        Assert.Single(r.Err.Trim().Split('\n'));
        Assert.Contains("--tgt-lang xx", r.Err);
    }

    [Fact]
    public void AValueWrongForEveryInputIsRejectedOnce()
    {
        foreach (var args in new[] { new[] { "--max-new-tokens", "100000" }, new[] { "--min-new-tokens", "100000" } })
        {
            var r = Translate("a\nb\nc\n", args);
            Assert.Equal(2, r.Code);
            Assert.Empty(r.Out);
            Assert.Single(r.Err.Trim().Split('\n'));
            Assert.Contains(args[0], r.Err);
        }
        // --max-length is Hugging Face's max_length: above the model's positions it is reduced to them, as there.
        var clamped = Translate("I love you so much\n", "--max-length", "1000");
        Assert.Equal(0, clamped.Code);
        Assert.Equal(Translate("I love you so much\n").Out, clamped.Out);
    }

    [Theory]
    [InlineData("--n-best 3", "--n-best")]
    [InlineData("--beam 0", "--beam")]
    [InlineData("--top-p 2 --sample", "--top-p")]
    [InlineData("--length-penalty 0.5", "--length-penalty")]
    [InlineData("--temperature 0.5", "--temperature")]
    [InlineData("--seed 1", "--seed")]
    [InlineData("--max-length 10 --max-new-tokens 5", "--max-new-tokens")]
    [InlineData("--beam 2 --sample", "--sample")]
    [InlineData("--quiet --verbose", "--verbose")]
    [InlineData("--batch-size 0", "--batch-size")]
    [InlineData("--threads 0", "--threads")]
    [InlineData("--device tpu", "--device")]
    [InlineData("--dtype int32", "--dtype")]
    [InlineData("--format xml", "--format")]
    [InlineData("--quantize int4", "--quantize")]
    [InlineData("--quantize int8 --dtype bfloat16", "--quantize")]
    public void BadOrConflictingFlagsAreUsageErrorsNamingTheFlag(string flags, string named)
    {
        var r = Translate("x\n", flags.Split(' '));
        Assert.Equal(2, r.Code);
        Assert.Empty(r.Out);
        Assert.Contains(named, r.Err);
        Assert.DoesNotContain("Parameter '", r.Err);
        Assert.DoesNotContain("BeamSize", r.Err);
        Assert.DoesNotContain("NBest", r.Err);
    }

    [Fact]
    public void ModelFlagsThatConflictOrGoUnusedAreUsageErrors()
    {
        var both = Cli("", "translate", "--model", Fixtures.Path_("hf-tiny", "marian"), "--checkpoint", Path.Combine(Seed, "tmodel.pt"), "x");
        Assert.Equal(2, both.Code);
        Assert.Contains("--checkpoint", both.Err);
        var tokenizer = Cli("", "translate", "--model", Fixtures.Path_("hf-tiny", "marian"), "--src-tokenizer", Path.Combine(Seed, "tokenizer_en.json"), "x");
        Assert.Equal(2, tokenizer.Code);
        Assert.Contains("--src-tokenizer", tokenizer.Err);
        var ids = Translate("2 5 3\n", "--input-format", "ids");
        Assert.Equal(2, ids.Code);
        Assert.Contains("--src-tokenizer", ids.Err);
        var inputAndText = Translate("", "-i", Path.Combine(Seed, "model_args.json"), "x");
        Assert.Equal(2, inputAndText.Code);
        Assert.Contains("--input", inputAndText.Err);
        var none = Cli("", "translate", "x");
        Assert.Equal(2, none.Code);
        Assert.Contains("--model", none.Err);
    }

    [Fact]
    public void MissingFilesExitOneNamingThePath()
    {
        var r = Cli("", "translate", "--model", "/nope/model", "x");
        Assert.Equal(1, r.Code);
        Assert.Contains("/nope/model", r.Err);
        Assert.Contains("does not exist", r.Err);
        Assert.DoesNotContain("tokenizer", r.Err);
    }

    [Theory]
    [InlineData("--length-penalty", "NaN", "--beam 2")]
    [InlineData("--temperature", "Infinity", "--sample")]
    [InlineData("--n-best", "3", "")]
    public void BadNumbersAreUsageErrorsNamingTheFlagAsTyped(string flag, string value, string extra)
    {
        var r = Translate("", extra.Split(' ', StringSplitOptions.RemoveEmptyEntries).Concat(new[] { flag, value, "hello" }).ToArray());
        Assert.Equal(2, r.Code);
        Assert.Contains($"{flag} {value}", r.Err);
    }

    [Fact]
    public void AMalformedModelArgsIsAnUnusableFileAndADisagreeingHeadsAUsageError()
    {
        // Without --heads the library reads h of model_args.json (seed-tiny: 4) and translates as with --heads 4.
        Assert.Equal(Translate("", "--heads", "4", "I love you so much").Out, Translate("", "I love you so much").Out);
        var disagree = Translate("", "--heads", "8", "I love you so much");
        Assert.Equal(2, disagree.Code);
        Assert.Contains("--heads is 8", disagree.Err);
        Assert.Contains("\"h\": 4", disagree.Err);
        Assert.Contains(Path.Combine(Seed, "model_args.json"), disagree.Err);
        var dir = Directory.CreateTempSubdirectory("ti-cli-");
        try
        {
            foreach (var f in new[] { "tmodel.pt", "tokenizer_en.json", "tokenizer_ne.json" })
                File.Copy(Path.Combine(Seed, f), Path.Combine(dir.FullName, f));
            File.WriteAllText(Path.Combine(dir.FullName, "model_args.json"), "{\"h\": \"four\", \"d_model\": [}");
            var args = new[] { "translate", "--checkpoint", Path.Combine(dir.FullName, "tmodel.pt"), "--src-tokenizer", Path.Combine(dir.FullName, "tokenizer_en.json"),
                "--tgt-tokenizer", Path.Combine(dir.FullName, "tokenizer_ne.json"), "--heads", "4", "I love you so much" };
            // Without --heads the file is needed: exit 1 naming it. With --heads the user's count is used.
            var without = Cli("", args.Where((_, i) => i != 7 && i != 8).ToArray());
            Assert.Equal(1, without.Code);
            Assert.Empty(without.Out);
            Assert.Contains(Path.Combine(dir.FullName, "model_args.json"), without.Err);
            var with = Cli("", args);
            Assert.Equal(0, with.Code);
            Assert.Equal(Translate("", "I love you so much").Out, with.Out);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void HelpGivesEveryValueFlagADefaultAndADescription()
    {
        var r = Cli("", "translate", "--help");
        Assert.Equal(0, r.Code);
        var help = string.Join("\n", r.Out);
        foreach (var flag in new[] { "--beam", "--n-best", "--length-penalty", "--temperature", "--top-k", "--top-p", "--seed", "--max-length",
                     "--max-new-tokens", "--min-new-tokens", "--repetition-penalty", "--no-repeat-ngram", "--batch-size", "--format",
                     "--input-format", "--device", "--dtype", "--threads", "--heads", "--src-lang", "--tgt-lang" })
        {
            var line = r.Out.FirstOrDefault(l => l.TrimStart().StartsWith(flag + " ", StringComparison.Ordinal) || l.Contains(", " + flag + " "));
            Assert.True(line is not null, $"{flag} is missing from --help:\n{help}");
            Assert.Contains("[default:", line);
        }
        foreach (var flag in new[] { "--input", "--output", "--quiet", "--verbose", "--version", "--stream", "--sample", "--ignore-eos" })
            Assert.Contains(flag, help);
    }

    [Fact]
    public void VersionIsPrinted()
    {
        var r = Cli("", "translate", "--version");
        Assert.Equal(0, r.Code);
        var expected = typeof(CliApp).Assembly.GetName().Version!;
        Assert.StartsWith($"{expected.Major}.{expected.Minor}.{expected.Build}", r.Out.Single());
    }

    [Fact]
    public void InputAndOutputFiles()
    {
        var dir = Directory.CreateTempSubdirectory("ti-cli-");
        var threads = TorchSharp.torch.get_num_threads();
        try
        {
            var input = Path.Combine(dir.FullName, "in.txt");
            var output = Path.Combine(dir.FullName, "out.txt");
            File.WriteAllText(input, "I love you so much\nwe help them .\n");
            var r = Translate("this is stdin, not read", "-i", input, "-o", output, "--threads", "1", "--quiet");
            Assert.Equal(0, r.Code);
            Assert.Empty(r.Out);
            Assert.Equal("", r.Err);
            Assert.Equal(Translate("I love you so much\nwe help them .\n").Out, File.ReadAllLines(output));
        }
        finally
        {
            TorchSharp.torch.set_num_threads(threads); // --threads 1 set the process-wide count
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void VerboseWritesOneSummaryLine()
    {
        var r = Translate("a\nb\nc\n", "--verbose", "--batch-size", "2");
        Assert.Equal(0, r.Code);
        Assert.Equal(3, r.Out.Length);
        var summary = Assert.Single(r.Err.Trim().Split('\n'));
        Assert.Contains("3 lines (0 failed) in 2 batches", summary);
        Assert.Contains("tokens/s", summary);
    }

    [Fact]
    public void AFailingLineStillGivesOneOutputLineAndTheOthersGoOn()
    {
        var tooLong = string.Join(' ', Enumerable.Repeat("we", 200));
        var r = Translate($"I love you so much\n{tooLong}\nwe help them .\n");
        Assert.Equal(3, r.Code); // some inputs failed
        Assert.Equal(3, r.Out.Length);
        Assert.Equal("ERROR", r.Out[1]);
        Assert.Contains("line 2:", r.Err);
        using var translator = SeedTranslator();
        Assert.Equal(translator.Translate("we help them ."), r.Out[2]);
        var jsonl = Translate($"{tooLong}\n", "--format", "jsonl");
        Assert.True(JsonDocument.Parse(jsonl.Out.Single()).RootElement.TryGetProperty("error", out _));
    }

    [Fact]
    public void IdsInputIsDecodedInBatchesOfBatchSizeWithTheSameResults()
    {
        using var translator = SeedTranslator();
        var sentences = new[] { "I love you so much", "we help them .", "we help them .", "I love you so much", "we" };
        var tokenizer = TransformerInference.Tokenization.WordLevelTokenizer.Create(Path.Combine(Seed, "tokenizer_en.json"));
        var lines = sentences.Select(t => string.Join(' ', new[] { 2 }.Concat(tokenizer.EncodeToIds(t)).Append(3))).ToArray();
        var checkpoint = new[] { "translate", "--checkpoint", Path.Combine(Seed, "tmodel.pt"), "--input-format", "ids", "--verbose" };
        var batched = Cli(string.Join("\n", lines), checkpoint.Concat(new[] { "--batch-size", "4" }).ToArray());
        Assert.Equal(0, batched.Code);
        Assert.Contains("5 lines (0 failed) in 2 batches", batched.Err);
        var alone = Cli(string.Join("\n", lines), checkpoint.Concat(new[] { "--batch-size", "1" }).ToArray());
        Assert.Contains("in 5 batches", alone.Err);
        Assert.Equal(alone.Out, batched.Out);
        // The ids are the library's translation, framed by the start and end tokens.
        var expected = translator.TranslateDetailed(sentences).Select(t => string.Join(' ', new[] { 2 }.Concat(t.Ids).Append(3)));
        Assert.Equal(expected, batched.Out);
    }

    [Fact]
    public void HuggingFaceFolderTranslatesWithItsLanguages()
    {
        var folder = Fixtures.Path_("hf-tiny", "m2m100");
        var c = Fixtures.Json("hf-tiny", "m2m100", "expected.json").GetProperty("translation").EnumerateArray().First();
        var r = Cli(c.GetProperty("input").GetString()! + "\n", "translate", "--model", folder,
            "--src-lang", c.GetProperty("src_lang").GetString()!, "--tgt-lang", c.GetProperty("tgt_lang").GetString()!, "--beam", "1",
            "--max-length", c.GetProperty("generation").GetProperty("max_length").GetInt32().ToString(CultureInfo.InvariantCulture));
        Assert.Equal(0, r.Code);
        Assert.Equal(c.GetProperty("output").GetString(), r.Out.Single());
    }

    /// <summary>Every hf-tiny folder, found at run time (a folder added to the fixtures is tested without a code change).</summary>
    public static TheoryData<string> HfTinyFolders()
    {
        var folders = new TheoryData<string>();
        foreach (var name in Directory.GetDirectories(Fixtures.Path_("hf-tiny")).Select(Path.GetFileName).Order(StringComparer.Ordinal))
            folders.Add(name!);
        return folders;
    }

    [Theory, MemberData(nameof(HfTinyFolders))]
    public void EveryHfTinyTranslationCaseGivesItsIdsAndTextThroughTheTool(string family)
    {
        // issue 8: every translation[] case through `translate --model DIR --format jsonl [--src-lang --tgt-lang]`, with
        // the case's greedy search (--beam 1, its max_length); the ids are generate's sequence (start token first).
        var folder = Fixtures.Path_("hf-tiny", family);
        var cases = Fixtures.Json("hf-tiny", family, "expected.json").GetProperty("translation").EnumerateArray().ToArray();
        Assert.NotEmpty(cases);
        static string? Optional(JsonElement c, string name) => c.TryGetProperty(name, out var v) ? v.GetString() : null;
        var groups = cases.GroupBy(c => (Src: Optional(c, "src_lang"), Tgt: Optional(c, "tgt_lang"),
            MaxLength: c.GetProperty("generation").GetProperty("max_length").GetInt32()));
        var checkedCases = 0;
        foreach (var group in groups)
        {
            var args = new List<string> { "translate", "--model", folder, "--format", "jsonl", "--beam", "1",
                "--max-length", group.Key.MaxLength.ToString(CultureInfo.InvariantCulture) };
            if (group.Key.Src is { } src) args.AddRange(new[] { "--src-lang", src });
            if (group.Key.Tgt is { } tgt) args.AddRange(new[] { "--tgt-lang", tgt });
            var inputs = group.Select(c => c.GetProperty("input").GetString()!).ToArray();
            Assert.All(inputs, i => Assert.DoesNotContain('\n', i));
            var r = Cli(string.Join("\n", inputs) + "\n", args.ToArray());
            Assert.True(r.Code == 0, $"{family}: exit {r.Code}: {r.Err}");
            Assert.Equal(inputs.Length, r.Out.Length);
            foreach (var (c, line) in group.Zip(r.Out))
            {
                using var record = JsonDocument.Parse(line);
                var name = c.GetProperty("name").GetString();
                Assert.Equal(c.GetProperty("input").GetString(), record.RootElement.GetProperty("input").GetString());
                Assert.True(c.GetProperty("output").GetString() == record.RootElement.GetProperty("output").GetString(), $"{name}: {line}");
                Assert.Equal(c.GetProperty("ids").Ints(), record.RootElement.GetProperty("n_best")[0].GetProperty("ids").Ints());
                checkedCases++;
            }
        }
        Assert.Equal(cases.Length, checkedCases);
    }

    [Fact]
    public void DtypeBfloat16TranslatesLikeTheLibrary()
    {
        var r = Translate("I love you so much\n", "--dtype", "bfloat16");
        Assert.Equal(0, r.Code);
        using var translator = Translator.Load(Path.Combine(Seed, "tmodel.pt"), Path.Combine(Seed, "tokenizer_en.json"),
            Path.Combine(Seed, "tokenizer_ne.json"), new TranslatorOptions { DType = TorchSharp.torch.ScalarType.BFloat16 });
        Assert.Equal(translator.Translate("I love you so much"), r.Out.Single());
    }

    [Theory]
    [InlineData("int8")]
    [InlineData("bf16")]
    [InlineData("bfloat16")]
    public void QuantizedWeightsTranslateEveryLine(string quantize)
    {
        var r = Translate("I love you so much\nwe help them .\n", "--quantize", quantize);
        Assert.Equal(0, r.Code);
        Assert.Equal(2, r.Out.Length);
        Assert.All(r.Out, l => Assert.False(string.IsNullOrWhiteSpace(l)));
    }

    [Theory]
    [InlineData("marian")]
    [InlineData("marian-separate")]
    [InlineData("m2m100")]
    [InlineData("m2m100-asym")]
    [InlineData("nllb")]
    [InlineData("mbart")]
    [InlineData("t5")]
    [InlineData("flan-t5")]
    public void EveryHuggingFaceFamilyTranslatesAndInspects(string family)
    {
        var folder = Fixtures.Path_("hf-tiny", family);
        var info = Cli("", "inspect", folder, "--format", "json");
        Assert.Equal(0, info.Code);
        var parameters = JsonDocument.Parse(info.Out.Single()).RootElement.GetProperty("parameters").GetInt64();
        using (var model = Loading.ModelLoader.Load(folder)) Assert.Equal(model.ParameterCount, parameters);
        var r = Cli("hello world\n", "translate", "--model", folder, "--beam", "1", "--max-new-tokens", "5");
        Assert.Equal(0, r.Code);
        Assert.Single(r.Out);
        using var translator = Translator.Load(folder);
        Assert.Equal(translator.Translate("hello world", new DecodingOptions { MaxNewTokens = 5 }), r.Out[0]);
    }

    [Fact]
    public void InspectReportsFamilySizesAndLanguages()
    {
        var r = Cli("", "inspect", Fixtures.Path_("hf-tiny", "m2m100"), "--format", "json");
        Assert.Equal(0, r.Code);
        var info = JsonDocument.Parse(r.Out.Single()).RootElement;
        var config = Fixtures.Json("hf-tiny", "m2m100", "config.json");
        Assert.Equal("M2M100", info.GetProperty("family").GetString());
        Assert.Equal(config.GetProperty("d_model").GetInt32(), info.GetProperty("d_model").GetInt32());
        Assert.Equal(config.GetProperty("encoder_layers").GetInt32(), info.GetProperty("encoder_layers").GetInt32());
        Assert.True(info.GetProperty("parameters").GetInt64() > 0);
        Assert.Contains("ne", info.GetProperty("languages").EnumerateArray().Select(l => l.GetString()));
        var seed = Cli("", "inspect", Path.Combine(Seed, "tmodel.pt"), "--heads", "4");
        Assert.Equal(0, seed.Code);
        Assert.Contains(seed.Out, l => l.StartsWith("heads ", StringComparison.Ordinal) && l.EndsWith(" 4", StringComparison.Ordinal));
    }
}
