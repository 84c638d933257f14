using System.Buffers;
using System.Text.Json;
using Microsoft.ML.Tokenizers;
using TransformerInference.Tokenization;
using Xunit;

namespace TransformerInference.Tests.Tokenization;

/// <summary>
/// <see cref="SentencePieceTranslationTokenizer"/> against the hf-tiny fixtures, which the Hugging Face slow
/// tokenizers (MarianTokenizer, M2M100Tokenizer, NllbTokenizer) produced.
/// </summary>
public class SentencePieceTests
{
    public static readonly string[] Families = ["marian", "m2m100", "nllb", "marian-separate", "m2m100-asym", "mbart", "t5", "flan-t5"];

    /// <summary>Families whose framing puts a language token first.</summary>
    private static bool LanguageFirst(string family) => family is "m2m100" or "nllb" or "m2m100-asym" or "mbart";

    private static readonly Dictionary<string, SentencePieceTranslationTokenizer> Tokenizers = [];
    private static readonly Dictionary<string, JsonElement> Expected = [];

    private static string Folder(string family) => Path.Combine(AppContext.BaseDirectory, "Fixtures", "hf-tiny", family);

    private static SentencePieceTranslationTokenizer Load(string family)
    {
        lock (Tokenizers)
        {
            if (!Tokenizers.TryGetValue(family, out SentencePieceTranslationTokenizer? tokenizer))
            {
                tokenizer = SentencePieceTranslationTokenizer.Create(Folder(family));
                Tokenizers[family] = tokenizer;
            }

            return tokenizer;
        }
    }

    private static JsonElement ExpectedOf(string family)
    {
        lock (Expected)
        {
            if (!Expected.TryGetValue(family, out JsonElement root))
            {
                using JsonDocument doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Folder(family), "expected.json")));
                root = doc.RootElement.Clone();
                Expected[family] = root;
            }

            return root;
        }
    }

    private static int[] Ints(JsonElement e) => e.EnumerateArray().Select(x => x.GetInt32()).ToArray();

    private static string? Lang(JsonElement e, string name)
        => e.TryGetProperty(name, out JsonElement v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    public static TheoryData<string, int> TokenizationCases()
    {
        var data = new TheoryData<string, int>();
        foreach (string family in Families)
        {
            int count = ExpectedOf(family).GetProperty("tokenization").GetArrayLength();
            for (int i = 0; i < count; i++)
            {
                data.Add(family, i);
            }
        }

        return data;
    }

    public static TheoryData<string, int> TranslationCases()
    {
        var data = new TheoryData<string, int>();
        foreach (string family in Families)
        {
            int count = ExpectedOf(family).GetProperty("translation").GetArrayLength();
            for (int i = 0; i < count; i++)
            {
                data.Add(family, i);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(TokenizationCases))]
    public void Tokenization_matches_hugging_face(string family, int index)
    {
        JsonElement test = ExpectedOf(family).GetProperty("tokenization")[index];
        SentencePieceTranslationTokenizer tokenizer = Load(family);
        string text = test.GetProperty("text").GetString()!;
        bool target = test.GetProperty("side").GetString() == "target";
        string? lang = Lang(test, "lang");

        IReadOnlyList<EncodedToken> tokens = tokenizer.Encode(text, lang, target, out _);
        Assert.Equal(Ints(test.GetProperty("ids")), tokens.Select(t => t.Id).ToArray());

        // Pieces: every token except the special ones the tokenizer adds.
        string[] expectedPieces = test.GetProperty("pieces").EnumerateArray().Select(p => p.GetString()!).ToArray();
        int skipFront = LanguageFirst(family) ? 1 : 0;
        string[] pieces = tokens.Skip(skipFront).Take(tokens.Count - skipFront - 1).Select(t => t.Value).ToArray();
        Assert.Equal(expectedPieces, pieces);

        IReadOnlyList<int> ids = target ? tokenizer.EncodeTarget(text, lang) : tokenizer.EncodeSource(text, lang);
        Assert.Equal(Ints(test.GetProperty("ids")), ids);

        JsonElement decoded = test.GetProperty("decoded");
        if (decoded.ValueKind == JsonValueKind.String)
        {
            Assert.Equal(decoded.GetString(), tokenizer.Decode(ids));
        }
    }

    /// <summary>Older NLLB and mBART-50 releases have no <c>added_tokens_decoder</c> in tokenizer_config.json: their
    /// language codes are only listed in <c>additional_special_tokens</c>, numbered in that order after the pieces.
    /// The same folder with the decoder removed must give the same ids for every case.</summary>
    [Theory]
    [InlineData("nllb")]
    [InlineData("mbart")]
    public void Config_without_added_tokens_decoder_gives_the_same_ids(string family)
    {
        string folder = Path.Combine(Path.GetTempPath(), "ti-no-decoder-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        try
        {
            foreach (string file in Directory.GetFiles(Folder(family)).Where(f => !f.EndsWith(".safetensors", StringComparison.Ordinal)))
            {
                File.Copy(file, Path.Combine(folder, Path.GetFileName(file)));
            }

            string configPath = Path.Combine(folder, "tokenizer_config.json");
            var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
            Assert.True(config.Remove("added_tokens_decoder"), "the fixture config should have had an added_tokens_decoder");
            Assert.True(config["additional_special_tokens"]!.AsArray().Count > 0);
            File.WriteAllText(configPath, config.ToJsonString());

            SentencePieceTranslationTokenizer tokenizer = SentencePieceTranslationTokenizer.Create(folder);
            JsonElement cases = ExpectedOf(family).GetProperty("tokenization");
            Assert.True(cases.GetArrayLength() > 0);
            foreach (JsonElement test in cases.EnumerateArray())
            {
                string text = test.GetProperty("text").GetString()!;
                string? lang = Lang(test, "lang");
                IReadOnlyList<int> ids = test.GetProperty("side").GetString() == "target"
                    ? tokenizer.EncodeTarget(text, lang)
                    : tokenizer.EncodeSource(text, lang);
                Assert.Equal(Ints(test.GetProperty("ids")), ids);
                Assert.Equal(Load(family).Decode(ids), tokenizer.Decode(ids));
            }

            foreach (JsonElement test in ExpectedOf(family).GetProperty("translation").EnumerateArray())
            {
                Assert.Equal(Ints(test.GetProperty("input_ids")),
                    tokenizer.EncodeSource(test.GetProperty("input").GetString()!, Lang(test, "src_lang")));
            }
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Theory]
    [MemberData(nameof(TranslationCases))]
    public void Translation_inputs_labels_and_outputs_match_hugging_face(string family, int index)
    {
        JsonElement test = ExpectedOf(family).GetProperty("translation")[index];
        SentencePieceTranslationTokenizer tokenizer = Load(family);
        string? srcLang = Lang(test, "src_lang");
        string? tgtLang = Lang(test, "tgt_lang");

        Assert.Equal(Ints(test.GetProperty("input_ids")), tokenizer.EncodeSource(test.GetProperty("input").GetString()!, srcLang));

        JsonElement teacher = test.GetProperty("teacher_forcing");
        Assert.Equal(Ints(teacher.GetProperty("labels")), tokenizer.EncodeTarget(teacher.GetProperty("target_text").GetString()!, tgtLang));

        Assert.Equal(test.GetProperty("output").GetString(), tokenizer.Decode(Ints(test.GetProperty("ids"))));

        JsonElement generation = test.GetProperty("generation");
        Assert.Equal(generation.GetProperty("eos_token_id").GetInt32(), tokenizer.EndOfSentenceId);
        JsonElement forced = generation.GetProperty("forced_bos_token_id");
        if (tgtLang is not null)
        {
            Assert.Equal(forced.GetInt32(), tokenizer.LanguageId(tgtLang));
        }
        else
        {
            Assert.Equal(JsonValueKind.Null, forced.ValueKind);
            Assert.Null(tokenizer.TargetLanguageToken(null));
            Assert.Equal(generation.GetProperty("decoder_start_token_id").GetInt32(), tokenizer.PadId); // Marian and T5 start with <pad>
        }
    }

    [Fact]
    public void Fixtures_cover_every_family_and_case_kind()
    {
        // Guards the theories above against silently running on empty data.
        Assert.Equal(40, ExpectedOf("marian").GetProperty("tokenization").GetArrayLength());
        Assert.Equal(41, ExpectedOf("m2m100").GetProperty("tokenization").GetArrayLength());
        Assert.Equal(40, ExpectedOf("nllb").GetProperty("tokenization").GetArrayLength());
        foreach (string family in Families)
        {
            Assert.Equal(8, ExpectedOf(family).GetProperty("translation").GetArrayLength());
        }

        Assert.Contains(ExpectedOf("marian").GetProperty("tokenization").EnumerateArray(), t => t.GetProperty("side").GetString() == "target");
    }

    [Fact]
    public void Families_and_defaults_come_from_the_config()
    {
        Assert.Equal(TranslationTokenizerFamily.Marian, Load("marian").Family);
        Assert.Equal(TranslationTokenizerFamily.M2M100, Load("m2m100").Family);
        Assert.Equal(TranslationTokenizerFamily.Nllb, Load("nllb").Family);

        Assert.Null(Load("marian").SourceLanguage);
        Assert.Empty(Load("marian").Languages);
        Assert.Equal(("en", "ne"), (Load("m2m100").SourceLanguage, Load("m2m100").TargetLanguage));
        Assert.Equal(("eng_Latn", "npi_Deva"), (Load("nllb").SourceLanguage, Load("nllb").TargetLanguage));

        // Default language = src_lang.
        Assert.Equal(Load("nllb").EncodeSource("a", "eng_Latn"), Load("nllb").EncodeSource("a"));
        Assert.Equal(Load("m2m100").EncodeSource("a", "en"), Load("m2m100").EncodeSource("a"));
        Assert.Equal(Load("m2m100").EncodeSource("a", "en"), Load("m2m100").EncodeToIds("a"));
    }

    [Fact]
    public void Language_ids_match_the_config_added_tokens()
    {
        foreach (string family in new[] { "m2m100", "nllb" })
        {
            SentencePieceTranslationTokenizer tokenizer = Load(family);
            using JsonDocument config = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Folder(family), "tokenizer_config.json")));
            var languages = config.RootElement.GetProperty("added_tokens_decoder").EnumerateObject()
                .Select(p => (Id: int.Parse(p.Name), Token: p.Value.GetProperty("content").GetString()!))
                .Where(p => p.Token.StartsWith("__", StringComparison.Ordinal) || p.Token.Contains('_') && !p.Token.StartsWith('<'))
                .ToList();
            Assert.Equal(family == "m2m100" ? 100 : 5, languages.Count);
            Assert.Equal(languages.Count, tokenizer.Languages.Count);
            foreach ((int id, string token) in languages)
            {
                Assert.Equal(id, tokenizer.LanguageId(token));
                Assert.Equal(token, tokenizer.IdToToken(id));
                Assert.True(tokenizer.IsSpecialToken(id));
            }
        }

        Assert.Equal(461, Load("m2m100").LanguageId("ne"));
        Assert.Equal(362, Load("nllb").LanguageId("npi_Deva"));
        Assert.Equal(499 + 8, Load("m2m100").VocabularySize);
        Assert.Equal(367, Load("nllb").VocabularySize);
        Assert.Equal(361, Load("marian").VocabularySize);
    }

    [Fact]
    public void Unknown_languages_and_marian_languages_are_rejected()
    {
        Assert.Throws<ArgumentException>(() => Load("nllb").LanguageId("xxx_Latn"));
        Assert.Throws<ArgumentException>(() => Load("m2m100").EncodeSource("a", "eng_Latn"));
        Assert.Throws<ArgumentException>(() => Load("marian").EncodeSource("a", "en"));
        Assert.Throws<ArgumentException>(() => Load("marian").LanguageId("en"));
    }

    [Fact]
    public void Nllb_legacy_behaviour_puts_the_language_last()
    {
        string folder = Path.Combine(Path.GetTempPath(), "nllb-legacy-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        try
        {
            File.Copy(Path.Combine(Folder("nllb"), "sentencepiece.bpe.model"), Path.Combine(folder, "sentencepiece.bpe.model"));
            string config = File.ReadAllText(Path.Combine(Folder("nllb"), "tokenizer_config.json"))
                .Replace("\"legacy_behaviour\": false", "\"legacy_behaviour\": true", StringComparison.Ordinal);
            Assert.Contains("\"legacy_behaviour\": true", config);
            File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), config);

            SentencePieceTranslationTokenizer legacy = SentencePieceTranslationTokenizer.Create(folder);
            Assert.Equal([29, 2, 361], legacy.EncodeSource("a"));
            Assert.Equal([361, 29, 2], Load("nllb").EncodeSource("a"));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void Nfkc_and_white_space_are_normalized_for_unigram_and_bpe_models()
    {
        foreach (string family in Families)
        {
            SentencePieceTranslationTokenizer tokenizer = Load(family);
            tokenizer.Encode("  ＡＢＣ\tﬁne\u00a0\n x  ", family == "marian" ? null : tokenizer.SourceLanguage, false, out string normalized);
            Assert.Equal("▁ABC▁fine▁x", normalized);
            Assert.Equal(tokenizer.EncodeSource("ABC fine x"), tokenizer.EncodeSource("  ＡＢＣ\tﬁne\u00a0\n x  "));
        }
    }

    [Fact]
    public void Runs_of_unknown_characters_are_one_unknown_piece()
    {
        foreach (string family in Families)
        {
            SentencePieceTranslationTokenizer tokenizer = Load(family);
            IReadOnlyList<EncodedToken> tokens = tokenizer.Encode("你好世界 a 你", family == "marian" ? null : tokenizer.SourceLanguage, false, out _);
            Assert.Contains(tokens, t => t.Value == "你好世界" && t.Id == tokenizer.UnknownId);
            Assert.Equal(2, tokens.Count(t => t.Id == tokenizer.UnknownId));
        }
    }

    [Fact]
    public void Only_nllb_cleans_up_tokenization_spaces()
    {
        // "▁I", "▁", "." in each vocabulary: HF writes "I ." and NLLB's clean_up_tokenization turns it into "I.".
        Assert.Equal(["▁I", "▁", "."], new[] { 66, 231, 244 }.Select(id => Load("nllb").IdToToken(id)));
        Assert.Equal("I.", Load("nllb").Decode([66, 231, 244]));
        Assert.Equal(["▁I", "▁", "."], new[] { 20, 8, 4 }.Select(id => Load("m2m100").IdToToken(id)));
        Assert.Equal("I .", Load("m2m100").Decode([20, 8, 4]));
        Assert.Equal(["▁I", "▁", "."], new[] { 50, 2, 3 }.Select(id => Load("marian").IdToToken(id)));
        Assert.Equal("I .", Load("marian").Decode([50, 2, 3]));
    }

    [Fact]
    public void Decode_can_keep_special_tokens_and_writes_into_spans()
    {
        SentencePieceTranslationTokenizer nllb = Load("nllb");
        IReadOnlyList<int> ids = nllb.EncodeSource("I love you.");
        Assert.Equal("I love you.", nllb.Decode(ids));
        string kept = nllb.Decode(ids, skipSpecialTokens: false);
        Assert.StartsWith("eng_Latn", kept);
        Assert.EndsWith("</s>", kept);

        Span<char> buffer = stackalloc char[64];
        Assert.Equal(OperationStatus.Done, nllb.Decode(ids, buffer, out int consumed, out int written));
        Assert.Equal((ids.Count, "I love you."), (consumed, buffer[..written].ToString()));
        Assert.Equal(OperationStatus.DestinationTooSmall, nllb.Decode(ids, buffer[..4], out consumed, out written));
        Assert.True(consumed < ids.Count);
        Assert.True(written <= 4);

        Assert.Throws<ArgumentOutOfRangeException>(() => nllb.Decode([100000]));
        Assert.Equal(string.Empty, Load("m2m100").Decode([100000])); // M2M100 maps unknown ids to <unk>, then drops it
    }

    [Fact]
    public void Bad_folders_raise_typed_errors_that_name_the_file()
    {
        Assert.Throws<DirectoryNotFoundException>(() => SentencePieceTranslationTokenizer.Create("/nonexistent/folder"));

        string folder = Path.Combine(Path.GetTempPath(), "hf-bad-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        try
        {
            FileNotFoundException missingConfig = Assert.Throws<FileNotFoundException>(() => SentencePieceTranslationTokenizer.Create(folder));
            Assert.Contains("tokenizer_config.json", missingConfig.Message);

            File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), "{\"tokenizer_class\": \"BertTokenizer\"}");
            Assert.Contains("BertTokenizer", Assert.Throws<NotSupportedException>(() => SentencePieceTranslationTokenizer.Create(folder)).Message);

            File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), "{\"tokenizer_class\": \"T5Tokenizer\"}");
            Assert.Contains("spiece.model", Assert.Throws<FileNotFoundException>(() => SentencePieceTranslationTokenizer.Create(folder)).Message);

            File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), "{\"tokenizer_class\": \"MarianTokenizer\"");
            Assert.Contains("tokenizer_config.json", Assert.Throws<InvalidDataException>(() => SentencePieceTranslationTokenizer.Create(folder)).Message);

            File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), "{\"tokenizer_class\": \"MarianTokenizer\"}");
            Assert.Contains("source.spm", Assert.Throws<FileNotFoundException>(() => SentencePieceTranslationTokenizer.Create(folder)).Message);

            File.WriteAllBytes(Path.Combine(folder, "source.spm"), [0x0a, 0xff]);
            Assert.Contains("source.spm", Assert.Throws<InvalidDataException>(() => SentencePieceTranslationTokenizer.Create(folder)).Message);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
