using TransformerInference.Decoding;
using Xunit;

namespace TransformerInference.Tests;

/// <summary>Text in, text out for Hugging Face folders: the SentencePiece tokenizer, the model and the family's
/// generation rules together reproduce the reference's greedy translations.</summary>
public class HuggingFaceTranslatorTests
{
    public static TheoryData<string> Families => new() { "marian", "m2m100", "nllb", "marian-separate", "m2m100-asym", "mbart", "t5", "flan-t5" };

    [Theory, MemberData(nameof(Families))]
    public void FolderTranslatesLikeTheReference(string family)
    {
        var folder = Fixtures.Path_("hf-tiny", family);
        var cases = Fixtures.Json("hf-tiny", family, "expected.json").GetProperty("translation").EnumerateArray().ToArray();
        Assert.NotEmpty(cases);
        foreach (var c in cases)
        {
            string? Lang(string name) => c.TryGetProperty(name, out var v) && v.ValueKind == System.Text.Json.JsonValueKind.String ? v.GetString() : null;
            using var translator = Translator.Load(folder, new TranslatorOptions { SourceLanguage = Lang("src_lang"), TargetLanguage = Lang("tgt_lang") });
            // The folder's defaults (Marian: beam 4, max_length 512) with the reference's greedy search and length.
            var greedy = new DecodingOptions { MaxLength = c.GetProperty("generation").GetProperty("max_length").GetInt32() };
            var result = translator.TranslateDetailed(new[] { c.GetProperty("input").GetString()! }, greedy)[0];
            Assert.Equal(c.GetProperty("output").GetString(), result.Text);
            var ids = c.GetProperty("ids").Ints(); // decoder start first, as generate returns them
            var best = result.Hypotheses[0].Hypothesis;
            var eos = c.GetProperty("generation").GetProperty("eos_token_id").GetInt32();
            Assert.Equal(ids.Skip(1), best.Ids.Concat(best.Finished ? new[] { eos } : Array.Empty<int>()));
        }
    }

    [Fact]
    public void TranslatorLevelOptionsKeepTheFamilyRules()
    {
        // Options given at load replace the folder's search defaults (Marian: beam 4) but not its rules: pad banned,
        // </s> forced at the length limit.
        var c = Fixtures.Json("hf-tiny", "marian", "expected.json").GetProperty("translation").EnumerateArray()
            .First(t => t.GetProperty("stop").GetString() == "forced_eos");
        var maxLength = c.GetProperty("generation").GetProperty("max_length").GetInt32();
        using var translator = Translator.Load(Fixtures.Path_("hf-tiny", "marian"),
            new TranslatorOptions { Decoding = new DecodingOptions { MaxLength = maxLength } });
        Assert.Equal(c.GetProperty("output").GetString(), translator.Translate(c.GetProperty("input").GetString()!));
        Assert.True(translator.TranslateDetailed(new[] { c.GetProperty("input").GetString()! })[0].Hypotheses[0].Hypothesis.Finished);
    }

    [Fact]
    public void GenerationDefaultsMapHuggingFaceFields()
    {
        var dir = Directory.CreateTempSubdirectory("ti-gen-").FullName;
        try
        {
            File.Copy(Fixtures.Path_("hf-tiny", "m2m100", "config.json"), Path.Combine(dir, "config.json"));
            File.WriteAllText(Path.Combine(dir, "generation_config.json"), """
                { "num_beams": 5, "early_stopping": true, "length_penalty": 0.6, "no_repeat_ngram_size": 3,
                  "repetition_penalty": 1.2, "min_length": 4, "max_length": 200, "forced_eos_token_id": 2 }
                """);
            var d = Loading.ModelLoader.LoadGenerationDefaults(dir);
            Assert.Equal((5, EarlyStopping.Immediate, 0.6, 3, 1.2, (int?)4, 200, (int?)2),
                (d.BeamSize, d.EarlyStopping, d.LengthPenalty, d.NoRepeatNgramSize, d.RepetitionPenalty, d.MinLength, d.MaxLength!.Value, d.ForcedEosTokenId));
            File.WriteAllText(Path.Combine(dir, "generation_config.json"), """{ "num_beams": 4, "early_stopping": "never" }""");
            Assert.Equal(EarlyStopping.Never, Loading.ModelLoader.LoadGenerationDefaults(dir).EarlyStopping);
            File.WriteAllText(Path.Combine(dir, "generation_config.json"), """{ "num_beams": 4, "early_stopping": false }""");
            Assert.Equal(EarlyStopping.Heuristic, Loading.ModelLoader.LoadGenerationDefaults(dir).EarlyStopping);
            File.WriteAllText(Path.Combine(dir, "generation_config.json"), """{ "early_stopping": "sometimes" }""");
            Assert.Contains("early_stopping", Assert.Throws<Loading.CheckpointException>(() => Loading.ModelLoader.LoadGenerationDefaults(dir)).Message);
            File.WriteAllText(Path.Combine(dir, "generation_config.json"), """{ "num_beams": "five" }""");
            var e = Assert.Throws<Loading.CheckpointException>(() => Loading.ModelLoader.LoadGenerationDefaults(dir));
            Assert.Contains("num_beams", e.Message);
            Assert.Contains("generation_config.json", e.Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Theory, MemberData(nameof(Families))]
    public async Task StreamedPiecesJoinToTheTranslation(string family)
    {
        var c = Fixtures.Json("hf-tiny", family, "expected.json").GetProperty("translation")[0];
        string? Lang(string name) => c.TryGetProperty(name, out var v) && v.ValueKind == System.Text.Json.JsonValueKind.String ? v.GetString() : null;
        using var translator = Translator.Load(Fixtures.Path_("hf-tiny", family), new TranslatorOptions
        {
            SourceLanguage = Lang("src_lang"),
            TargetLanguage = Lang("tgt_lang"),
            Decoding = new DecodingOptions { MaxLength = c.GetProperty("generation").GetProperty("max_length").GetInt32() },
        });
        var input = c.GetProperty("input").GetString()!;
        var pieces = new List<string>();
        await foreach (var piece in translator.TranslateStreamAsync(input)) pieces.Add(piece);
        Assert.Equal(c.GetProperty("output").GetString(), string.Concat(pieces));
        Assert.True(pieces.Count > 1);
    }

    [Fact]
    public void UnknownLanguageIsRejectedAtLoad()
    {
        var e = Assert.ThrowsAny<ArgumentException>(() => Translator.Load(Fixtures.Path_("hf-tiny", "nllb"), new TranslatorOptions { TargetLanguage = "xx_Nope" }));
        Assert.Contains("xx_Nope", e.Message);
    }

    [Fact]
    public void Mt5ConfigIsT5V11WithAnUntiedHeadByDefault()
    {
        // mT5 is the T5 v1.1 network (gated-gelu, separate lm_head) under model_type "mt5", whose config leaves
        // tie_word_embeddings out because MT5Config defaults it to false (T5Config: true). flan-t5's weights and
        // tokenizer under an mT5 config must translate exactly as flan-t5; the same config as "t5" ties the head, so its
        // stored lm_head.weight is an unexpected tensor.
        var dir = Directory.CreateTempSubdirectory("ti-mt5-").FullName;
        try
        {
            foreach (var file in Directory.GetFiles(Fixtures.Path_("hf-tiny", "flan-t5")))
                File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
            var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
            config.Remove("tie_word_embeddings");
            config["architectures"] = new System.Text.Json.Nodes.JsonArray("MT5ForConditionalGeneration");
            void Write(string modelType)
            {
                config["model_type"] = modelType;
                File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
            }

            Write("mt5");
            var cases = Fixtures.Json("hf-tiny", "flan-t5", "expected.json").GetProperty("translation").EnumerateArray().ToArray();
            using (var translator = Translator.Load(dir))
            {
                foreach (var c in cases)
                {
                    var greedy = new DecodingOptions { MaxLength = c.GetProperty("generation").GetProperty("max_length").GetInt32() };
                    var best = translator.TranslateDetailed(new[] { c.GetProperty("input").GetString()! }, greedy)[0];
                    Assert.Equal(c.GetProperty("output").GetString(), best.Text);
                    Assert.Equal(c.GetProperty("ids").Ints().Skip(1).TakeWhile(id => id != 1), best.Hypotheses[0].Hypothesis.Ids);
                }
            }

            Write("t5");
            var e = Assert.Throws<Loading.CheckpointException>(() => Translator.Load(dir));
            Assert.Contains("lm_head.weight", e.Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
