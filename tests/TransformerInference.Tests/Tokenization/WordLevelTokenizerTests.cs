using System.Buffers;
using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;
using TransformerInference.Tokenization;
using Xunit;

namespace TransformerInference.Tests.Tokenization;

internal static class TokenizerFixtures
{
    public static readonly string[] Names = ["seed-tiny", "thinam-tiny"];

    public static string PathOf(string fixture, string file) => Path.Combine(AppContext.BaseDirectory, "Fixtures", fixture, file);

    private static readonly Dictionary<string, WordLevelTokenizer> Cache = [];

    public static WordLevelTokenizer Load(string fixture, string file)
    {
        lock (Cache)
        {
            string path = PathOf(fixture, file);
            if (!Cache.TryGetValue(path, out WordLevelTokenizer? tokenizer))
            {
                tokenizer = WordLevelTokenizer.Create(path);
                Cache[path] = tokenizer;
            }

            return tokenizer;
        }
    }

    public static JsonElement Sentence(string fixture, int index)
    {
        using FileStream stream = File.OpenRead(PathOf(fixture, "expected.json"));
        using JsonDocument doc = JsonDocument.Parse(stream);
        return doc.RootElement.GetProperty("sentences")[index].Clone();
    }

    public static int SentenceCount(string fixture)
    {
        using FileStream stream = File.OpenRead(PathOf(fixture, "expected.json"));
        using JsonDocument doc = JsonDocument.Parse(stream);
        return doc.RootElement.GetProperty("sentences").GetArrayLength();
    }

    public static int[] Ints(JsonElement array) => array.EnumerateArray().Select(e => e.GetInt32()).ToArray();
}

public class WordLevelTokenizerTests
{
    public static TheoryData<string, int> FixtureSentences()
    {
        var data = new TheoryData<string, int>();
        foreach (string fixture in TokenizerFixtures.Names)
        {
            for (int i = 0; i < TokenizerFixtures.SentenceCount(fixture); i++)
            {
                data.Add(fixture, i);
            }
        }

        return data;
    }

    [Fact]
    public void FixturesHaveTheExpectedNumberOfSentences()
    {
        // Guards the theory below against silently running on an empty or truncated fixture.
        Assert.Equal(41, TokenizerFixtures.SentenceCount("seed-tiny"));
        Assert.Equal(41, TokenizerFixtures.SentenceCount("thinam-tiny"));
    }

    [Theory]
    [MemberData(nameof(FixtureSentences))]
    public void SourceEncodingMatchesReference(string fixture, int index)
    {
        JsonElement sentence = TokenizerFixtures.Sentence(fixture, index);
        WordLevelTokenizer en = TokenizerFixtures.Load(fixture, "tokenizer_en.json");
        string src = sentence.GetProperty("src").GetString()!;
        int[] expectedIds = TokenizerFixtures.Ints(sentence.GetProperty("src_ids"));

        Assert.Equal(expectedIds, en.EncodeToIds(src));
        Assert.Equal(expectedIds.Length, en.CountTokens(src));

        IReadOnlyList<EncodedToken> tokens = en.EncodeToTokens(src, out string? normalized);
        Assert.Null(normalized);
        Assert.Equal(expectedIds, tokens.Select(t => t.Id));
        string[] expectedTokens = sentence.GetProperty("src_tokens").EnumerateArray().Select(e => e.GetString()!).ToArray();
        Assert.Equal(expectedTokens, tokens.Select(t => t.Value));
        foreach (EncodedToken token in tokens)
        {
            Assert.Equal(token.Value, src[token.Offset]);
        }
    }

    [Theory]
    [MemberData(nameof(FixtureSentences))]
    public void TargetDecodingMatchesReference(string fixture, int index)
    {
        JsonElement sentence = TokenizerFixtures.Sentence(fixture, index);
        JsonElement outputIds = sentence.GetProperty("output_ids");
        if (outputIds.ValueKind == JsonValueKind.Null)
        {
            // The too-long input has no output; its ids are still checked above.
            Assert.Equal("too_long", sentence.GetProperty("kind").GetString());
            return;
        }

        WordLevelTokenizer ne = TokenizerFixtures.Load(fixture, "tokenizer_ne.json");
        int[] ids = TokenizerFixtures.Ints(outputIds);
        string expected = sentence.GetProperty("output_text").GetString()!;
        Assert.Equal(expected, ne.Decode(ids));

        // The span overload, through the base class's growth loop and directly.
        Assert.Equal(expected, ((Tokenizer)ne).Decode((IEnumerable<int>)ids.ToList()));
        var buffer = new char[expected.Length];
        Assert.Equal(OperationStatus.Done, ne.Decode(ids, buffer, out int consumed, out int written));
        Assert.Equal(ids.Length, consumed);
        Assert.Equal(expected, new string(buffer, 0, written));
    }

    [Fact]
    public void PublicLookupsMatchTheFixtureVocabulary()
    {
        WordLevelTokenizer en = TokenizerFixtures.Load("seed-tiny", "tokenizer_en.json");
        WordLevelTokenizer ne = TokenizerFixtures.Load("seed-tiny", "tokenizer_ne.json");
        Assert.Equal(47, en.VocabularySize);
        Assert.Equal(69, ne.VocabularySize);
        Assert.Equal(0, en.UnknownId);
        Assert.Equal("[UNK]", en.UnknownToken);
        Assert.Equal(1, en.TokenToId("[PAD]"));
        Assert.Equal(2, ne.TokenToId("[SOS]"));
        Assert.Equal(3, ne.TokenToId("[EOS]"));
        Assert.Equal(31, en.TokenToId("I"));
        Assert.Null(en.TokenToId("LOVE"));
        Assert.Equal("love", en.IdToToken(25));
        Assert.Equal("[EOS]", en.IdToToken(3));
        Assert.Null(en.IdToToken(47));
        Assert.Null(en.IdToToken(-1));
        Assert.True(en.IsSpecialToken(2));
        Assert.False(en.IsSpecialToken(31));
        Assert.Equal([0, 1, 2, 3], en.SpecialTokenIds.Order());
    }

    [Fact]
    public void DecodeDropsSpecialTokensAndJoinsWithSpaces()
    {
        WordLevelTokenizer en = TokenizerFixtures.Load("seed-tiny", "tokenizer_en.json");
        int[] ids = [2, 31, 0, 25, 1, 14, 3];
        Assert.Equal("I love you", en.Decode(ids));
        Assert.Equal("[SOS] I [UNK] love [PAD] you [EOS]", en.Decode(ids, skipSpecialTokens: false));
        Assert.Equal(string.Empty, en.Decode([2, 3, 1]));
        Assert.Equal(string.Empty, en.Decode([]));
    }

    [Fact]
    public void DecodeUnknownIdThrowsNamingTheId()
    {
        WordLevelTokenizer en = TokenizerFixtures.Load("seed-tiny", "tokenizer_en.json");
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => en.Decode([31, 4711]));
        Assert.Contains("4711", e.Message);
        Assert.Equal(4711, e.ActualValue);
        Assert.Throws<ArgumentOutOfRangeException>(() => en.Decode([-5], new char[16], out _, out _));
    }

    [Fact]
    public void DecodeIntoSmallDestinationReportsProgress()
    {
        WordLevelTokenizer en = TokenizerFixtures.Load("seed-tiny", "tokenizer_en.json");
        int[] ids = [2, 31, 25, 14]; // "[SOS] I love you" -> "I love you"
        var buffer = new char[7];
        Assert.Equal(OperationStatus.DestinationTooSmall, en.Decode(ids, buffer, out int consumed, out int written));
        Assert.Equal(3, consumed); // [SOS], I, love fit ("I love" = 6 chars); " you" does not
        Assert.Equal("I love", new string(buffer, 0, written));
    }

    [Fact]
    public void MaxTokenCountStopsEarlyAndReportsCharsConsumed()
    {
        WordLevelTokenizer en = TokenizerFixtures.Load("seed-tiny", "tokenizer_en.json");
        const string text = "I love  you so much";
        IReadOnlyList<int> ids = en.EncodeToIds(text, 3, out string? normalized, out int consumed);
        Assert.Null(normalized);
        Assert.Equal([31, 25, 14], ids);
        Assert.Equal("I love  you".Length, consumed);

        IReadOnlyList<int> all = en.EncodeToIds(text, 100, out _, out int consumedAll);
        Assert.Equal(5, all.Count);
        Assert.Equal(text.Length, consumedAll);

        Assert.Equal("I love".Length, en.GetIndexByTokenCount(text, 2, out _, out int count));
        Assert.Equal(2, count);
        Assert.Equal("I love  you so ".Length, en.GetIndexByTokenCountFromEnd(text, 1, out _, out _));
    }

    [Fact]
    public void SpanOverloadsGiveTheSameResultsAsStringOverloads()
    {
        WordLevelTokenizer en = TokenizerFixtures.Load("seed-tiny", "tokenizer_en.json");
        const string text = "xx [SOS]I love you, नेपाल 😊";
        ReadOnlySpan<char> span = ("<<" + text + ">>").AsSpan(2, text.Length);
        Assert.Equal(en.EncodeToIds(text), en.EncodeToIds(span));
        Assert.Equal(8, en.CountTokens(span));
        Assert.Equal(
            en.EncodeToTokens(text, out _).Select(t => (t.Id, t.Value, t.Offset)),
            en.EncodeToTokens(span, out _).Select(t => (t.Id, t.Value, t.Offset)));
    }

    [Fact]
    public void SpecialTokensInTextAreSplitOutWithOffsets()
    {
        WordLevelTokenizer en = TokenizerFixtures.Load("seed-tiny", "tokenizer_en.json");
        const string text = "I[SOS]love [EOS]you[PAD";
        IReadOnlyList<EncodedToken> tokens = en.EncodeToTokens(text, out _);
        Assert.Equal(["I", "[SOS]", "love", "[EOS]", "you", "[", "PAD"], tokens.Select(t => t.Value));
        Assert.Equal([31, 2, 25, 3, 14, 0, 0], tokens.Select(t => t.Id));
        Assert.Equal(new Range(1, 6), tokens[1].Offset);
        Assert.Equal(new Range(11, 16), tokens[3].Offset);
    }

    [Fact]
    public void WithoutPreTokenizationEachPieceIsOneWord()
    {
        WordLevelTokenizer en = TokenizerFixtures.Load("seed-tiny", "tokenizer_en.json");
        Assert.Equal([25], en.EncodeToIds("love", considerPreTokenization: false));
        Assert.Equal([0], en.EncodeToIds("I love", considerPreTokenization: false));
        Assert.Equal([2, 25, 3], en.EncodeToIds("[SOS]love[EOS]", considerPreTokenization: false));
    }

    private static string[] PreTokens(string text) =>
        WhitespacePreTokenizer.Split(text).Select(p => text.Substring(p.Index, p.Length)).ToArray();

    [Fact]
    public void DevanagariWordsWithVowelSignsAreOnePreToken()
    {
        // U+093E/U+0940 are Mc, U+0902 is Mn: word characters for Rust's \w, not for .NET's.
        Assert.Equal(["तपाईंलाई"], PreTokens("तपाईंलाई"));
        Assert.Equal(["म", "तपाईंलाई", "माया", "गर्छु", "।"], PreTokens("म तपाईंलाई माया गर्छु।"));
        Assert.Equal(["\u0915\u093C", "\u0916\u093C\u094D", "\u093E"], PreTokens("\u0915\u093C \u0916\u093C\u094D \u093E")); // nukta, virama, lone vowel sign: all word chars

        WordLevelTokenizer en = TokenizerFixtures.Load("seed-tiny", "tokenizer_en.json");
        IReadOnlyList<EncodedToken> tokens = en.EncodeToTokens("I love नेपाल", out _);
        Assert.Equal(["I", "love", "नेपाल"], tokens.Select(t => t.Value));
        Assert.Equal(new Range(7, 12), tokens[2].Offset);

        WordLevelTokenizer ne = TokenizerFixtures.Load("seed-tiny", "tokenizer_ne.json");
        Assert.Equal([ne.TokenToId("तपाईंलाई")!.Value, ne.TokenToId("।")!.Value], ne.EncodeToIds("तपाईंलाई।"));
        Assert.NotEqual(ne.UnknownId, ne.TokenToId("तपाईंलाई"));
    }

    [Fact]
    public void CombiningMarksStayInTheWord()
    {
        Assert.Equal(["cafe\u0301"], PreTokens("cafe\u0301"));
        Assert.Equal(["e\u20DD", "x"], PreTokens("e\u20DD x")); // Me (enclosing circle)
        Assert.Equal(["\u0301abc"], PreTokens("\u0301abc")); // a leading mark starts a word too
    }

    [Fact]
    public void AstralLettersAreWordCharsAndEmojiArePunctuation()
    {
        const string boldA = "\U0001D400"; // MATHEMATICAL BOLD CAPITAL A, Lu, two UTF-16 units
        Assert.Equal(["x" + boldA + "y"], PreTokens("x" + boldA + "y"));
        Assert.Equal(["ab", "😀😊", "cd"], PreTokens("ab😀😊cd"));
        Assert.Equal(["😀", "!?"], PreTokens("😀 !?"));
        Assert.Equal(["a", "😀!?", "b"], PreTokens("a😀!?b")); // one run of non-word, non-space chars
        Assert.Equal([(1, 2)], WhitespacePreTokenizer.Split(" " + boldA));
    }

    [Fact]
    public void AlphabeticSymbolsAndJoinControlsAreWordChars()
    {
        Assert.Equal(["x\u24B6y"], PreTokens("x\u24B6y")); // CIRCLED LATIN CAPITAL LETTER A: So but Alphabetic
        Assert.Equal(["x\U0001F130y"], PreTokens("x\U0001F130y")); // SQUARED LATIN CAPITAL LETTER A
        Assert.Equal(["x", "\u2460", "y"], PreTokens("x\u2460y")); // CIRCLED DIGIT ONE: So, not Alphabetic
        Assert.Equal(["a\u200Db", "c\u200Cd"], PreTokens("a\u200Db c\u200Cd")); // ZWJ, ZWNJ
        Assert.Equal(["a", "\u200B", "b"], PreTokens("a\u200Bb")); // ZERO WIDTH SPACE: Cf, neither \w nor \s
        Assert.Equal(["x\u216By"], PreTokens("x\u216By")); // ROMAN NUMERAL TWELVE: Nl
        Assert.Equal(["x", "\u00B2", "y"], PreTokens("x\u00B2y")); // SUPERSCRIPT TWO: No, not \w
        Assert.Equal(["a_b\u203Fc"], PreTokens("a_b\u203Fc")); // Pc
        Assert.Equal(["\u0966\u0967\u0663x"], PreTokens("\u0966\u0967\u0663x")); // Devanagari and Arabic-Indic digits (Nd)
    }

    [Fact]
    public void UnicodeWhiteSpaceSeparatesWords()
    {
        foreach (char space in "\u3000\u0085\u00A0\u1680\u2007\u2028\u2029\u202F\u205F\t\n\v\f\r ")
        {
            Assert.Equal(["a", "b"], PreTokens("a" + space + "b"));
        }

        Assert.Equal(["a", "\u180E", "b"], PreTokens("a\u180Eb")); // MONGOLIAN VOWEL SEPARATOR: Cf since Unicode 6.3
        Assert.Equal(["a", "\uFEFF", "b"], PreTokens("a\uFEFFb")); // BOM is Cf, not White_Space
    }

    [Fact]
    public void UnpairedSurrogateIsAPunctuationCharacter()
    {
        Assert.Equal(["a", "\uD800", "b"], PreTokens("a\uD800b"));
        Assert.Equal(["a", "\uDC00\uD800", "b"], PreTokens("a\uDC00\uD800b"));
    }

    [Fact]
    public void WhitespaceSplitKeepsPunctuationAttached()
    {
        const string text = "I love\u3000you, नेपाल!";
        List<(int Index, int Length)> pieces = WhitespacePreTokenizer.Split(text, whitespaceSplitOnly: true);
        Assert.Equal(["I", "love", "you,", "नेपाल!"], pieces.Select(p => text.Substring(p.Index, p.Length)));
    }

    // ---- loading and errors ----

    private static string TokenizerJson(string model, string preTokenizer = """{"type":"Whitespace"}""", string normalizer = "null", string addedTokens = "[]")
        => $$"""{"version":"1.0","truncation":null,"padding":null,"added_tokens":{{addedTokens}},"normalizer":{{normalizer}},"pre_tokenizer":{{preTokenizer}},"post_processor":null,"decoder":null,"model":{{model}}}""";

    private const string SmallModel = """{"type":"WordLevel","vocab":{"[UNK]":0,"a":1,"b":2},"unk_token":"[UNK]"}""";

    private static WordLevelTokenizer FromJson(string json, string name = "test.json")
        => WordLevelTokenizer.Create(new MemoryStream(Encoding.UTF8.GetBytes(json)), name);

    [Fact]
    public void MissingFileThrowsFileNotFoundWithPath()
    {
        string path = Path.Combine(Path.GetTempPath(), "no-such-dir-" + Guid.NewGuid().ToString("N"), "tokenizer.json");
        var e = Assert.Throws<FileNotFoundException>(() => WordLevelTokenizer.Create(path));
        Assert.Equal(path, e.FileName);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void CorruptJsonThrowsInvalidDataNamingTheFile()
    {
        string path = Path.Combine(Path.GetTempPath(), "corrupt-" + Guid.NewGuid().ToString("N") + ".json");
        File.WriteAllText(path, """{"model": {"type": "WordLevel", "vocab": {"a": 1,""");
        try
        {
            var e = Assert.Throws<InvalidDataException>(() => WordLevelTokenizer.Create(path));
            Assert.Contains(path, e.Message);
            Assert.IsAssignableFrom<JsonException>(e.InnerException);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void UnsupportedModelTypeThrowsNotSupportedNamingTypeAndFile()
    {
        string json = TokenizerJson("""{"type":"BPE","vocab":{"a":0},"merges":[]}""");
        var e = Assert.Throws<NotSupportedException>(() => FromJson(json, "/models/bpe/tokenizer.json"));
        Assert.Contains("BPE", e.Message);
        Assert.Contains("/models/bpe/tokenizer.json", e.Message);
    }

    [Theory]
    [InlineData("""{"type":"Lowercase"}""", "{\"type\":\"Whitespace\"}", "normalizer", "Lowercase")]
    [InlineData("null", """{"type":"ByteLevel","add_prefix_space":false}""", "pre_tokenizer", "ByteLevel")]
    [InlineData("null", """{"type":"Sequence","pretokenizers":[{"type":"Whitespace"},{"type":"Digits","individual_digits":true}]}""", "pre_tokenizer", "Digits")]
    [InlineData("null", "null", "pre_tokenizer", "null")]
    public void UnsupportedComponentsThrowNotSupported(string normalizer, string preTokenizer, string field, string type)
    {
        var e = Assert.Throws<NotSupportedException>(() => FromJson(TokenizerJson(SmallModel, preTokenizer, normalizer), "x/tok.json"));
        Assert.Contains(field, e.Message);
        Assert.Contains(type, e.Message);
        Assert.Contains("x/tok.json", e.Message);
    }

    [Fact]
    public void NonNullDecoderOrPostProcessorIsRejected()
    {
        string json = TokenizerJson(SmallModel).Replace("\"decoder\":null", "\"decoder\":{\"type\":\"WordPiece\",\"prefix\":\"##\",\"cleanup\":true}");
        var e = Assert.Throws<NotSupportedException>(() => FromJson(json));
        Assert.Contains("decoder", e.Message);
        Assert.Contains("WordPiece", e.Message);

        json = TokenizerJson(SmallModel).Replace("\"post_processor\":null", "\"post_processor\":{\"type\":\"TemplateProcessing\"}");
        Assert.Contains("post_processor", Assert.Throws<NotSupportedException>(() => FromJson(json)).Message);
    }

    [Theory]
    [InlineData("""{"type":"WordLevel","unk_token":"[UNK]"}""", "vocab")]
    [InlineData("""{"type":"WordLevel","vocab":{"a":0}}""", "unk_token")]
    [InlineData("""{"type":"WordLevel","vocab":{"a":0},"unk_token":"[UNK]"}""", "[UNK]")]
    [InlineData("""{"type":"WordLevel","vocab":{"a":"zero"},"unk_token":"a"}""", "vocab entry 'a'")]
    public void MissingVocabOrUnknownTokenThrowsInvalidData(string model, string mention)
    {
        var e = Assert.Throws<InvalidDataException>(() => FromJson(TokenizerJson(model), "bad/tokenizer.json"));
        Assert.Contains(mention, e.Message);
        Assert.Contains("bad/tokenizer.json", e.Message);
    }

    [Fact]
    public void MissingModelThrowsInvalidData()
    {
        var e = Assert.Throws<InvalidDataException>(() => FromJson("""{"added_tokens":[],"pre_tokenizer":{"type":"Whitespace"}}""", "m.json"));
        Assert.Contains("model", e.Message);
        Assert.Contains("m.json", e.Message);
    }

    [Fact]
    public void SequenceOfWhitespacePreTokenizersIsAccepted()
    {
        string seq = """{"type":"Sequence","pretokenizers":[{"type":"WhitespaceSplit"},{"type":"Whitespace"}]}""";
        Assert.Equal([1, 0, 2], FromJson(TokenizerJson(SmallModel, seq)).EncodeToIds("a,b"));
        string split = """{"type":"Sequence","pretokenizers":[{"type":"WhitespaceSplit"}]}""";
        Assert.Equal([0, 2], FromJson(TokenizerJson(SmallModel, split)).EncodeToIds("a,b b"));
    }

    [Fact]
    public void AddedTokensNotInTheVocabularyGetNextIdsAndLeftmostLongestMatching()
    {
        string added = """
            [{"id":0,"content":"[UNK]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
             {"id":3,"content":"<m>","single_word":false,"lstrip":true,"rstrip":true,"normalized":false,"special":true},
             {"id":4,"content":"<m>x","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":false},
             {"id":5,"content":"ab","single_word":true,"lstrip":false,"rstrip":false,"normalized":true,"special":false}]
            """;
        WordLevelTokenizer t = FromJson(TokenizerJson(SmallModel, addedTokens: added));
        Assert.Equal(3, t.TokenToId("<m>"));
        Assert.Equal(4, t.TokenToId("<m>x"));
        Assert.Equal(5, t.TokenToId("ab"));
        Assert.Equal(6, t.VocabularySize);

        // "<m>" strips the spaces around it; the normalized "ab" is matched in the gaps the first pass left
        // ("ab abb ab"), where single_word rejects the "ab" inside "abb".
        IReadOnlyList<EncodedToken> tokens = t.EncodeToTokens("a  <m>  b<m>xab abb ab", out _);
        Assert.Equal(["a", "  <m>  ", "b", "<m>x", "ab", "abb", "ab"], tokens.Select(x => x.Value));
        Assert.Equal([1, 3, 2, 4, 5, 0, 5], tokens.Select(x => x.Id));
        Assert.Equal("a b <m>x ab ab", t.Decode(tokens.Select(x => x.Id)));
    }
}
