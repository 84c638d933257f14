using System.Globalization;
using System.Text;
using System.Text.Json;
using TransformerInference.Tokenization;
using Xunit;
using HfTokenizer = Tokenizers.DotNet.Tokenizer;

namespace TransformerInference.Tests.Tokenization;

/// <summary>
/// Hugging Face's own Rust <c>tokenizers</c> (through Tokenizers.DotNet) as the reference implementation.
/// </summary>
internal static class HfOracle
{
    private static readonly Lazy<string?> LoadFailure = new(Probe);

    /// <summary>Why the oracle cannot run here, or null when it loads.</summary>
    public static string? SkipReason => LoadFailure.Value;

    public static HfTokenizer Load(string path) => new(vocabPath: path);

    /// <summary>
    /// Encodes with the oracle. It rejects unpaired surrogates, which cannot reach Hugging Face as UTF-8 anyway:
    /// they are sent as U+FFFD, the character <see cref="WhitespacePreTokenizer"/> classifies them as.
    /// </summary>
    public static int[] Encode(HfTokenizer tokenizer, string text)
        => tokenizer.Encode(string.Concat(text.EnumerateRunes().Select(r => r.ToString()))).Select(id => checked((int)id)).ToArray();

    private static string? Probe()
    {
        try
        {
            Load(TokenizerFixtures.PathOf("seed-tiny", "tokenizer_en.json")).Encode("I love you");
            return null;
        }
        catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or BadImageFormatException or EntryPointNotFoundException)
        {
            // Only a native-library load failure skips; wrong results still fail the tests.
            return "Hugging Face tokenizers oracle unavailable: the native library of Tokenizers.DotNet.runtime.linux-x64 "
                + $"did not load on this machine ({e.GetType().Name}: {e.Message})";
        }
    }
}

/// <summary>A fact that is skipped, with the reason, when the Hugging Face oracle's native library cannot load.</summary>
public sealed class OracleFactAttribute : FactAttribute
{
    /// <summary>Sets <see cref="FactAttribute.Skip"/> when the oracle is unavailable.</summary>
    public OracleFactAttribute()
    {
        if (HfOracle.SkipReason is { } reason)
        {
            Skip = reason;
        }
    }
}

public sealed class HuggingFaceOracleTests : IDisposable
{
    private readonly List<string> _tempFiles = [];

    public void Dispose()
    {
        foreach (string file in _tempFiles)
        {
            File.Delete(file);
        }
    }

    private static readonly string[] TrickyStrings =
    [
        "",
        "   ",
        "I love you so much",
        "   I   love  you\tso  much  ",
        "I LOVE YOU SO MUCH!!! ...",
        "hi[SOS]there",
        "[SOS][EOS][PAD]",
        "[SOS [EOS] [[UNK]] [SOS]]",
        "<m>x<m> <m>  a  <m>b",
        "ab xab abx ab_ab ab-ab ab",
        "म तपाईंलाई एकदम धेरै माया गर्छु।",
        "तपाईंलाई नेपाल",
        // Devanagari: every dependent vowel sign, virama, nukta, candrabindu, anusvara, visarga, avagraha, digits.
        "का कि की कु कू कृ कॄ कॅ कॆ के कै कॉ कॊ को कौ क् क़ ख़ ग़ ज़ ड़ ढ़ फ़ य़ कँ कं कः ऽ ॐ ०१२३४५६७८९ क्ष त्र ज्ञ",
        "\u0915\u093C\u094D\u200D\u0937 \u0915\u094D\u200C\u0937",
        "cafe\u0301 café naïve e\u0308\u0301x \u0301start",
        "x\U0001D400y \U0001D7CE\U0001D7CF 𝐀𝐁𝐂",
        "Ⓐⓑⓒ 🄰🅐🅰 ① ② ⅻ Ⅻ ² ½ ¾",
        "I love you so much 😊 😀😁 👍🏽 👨‍👩‍👧 🇳🇵 ❤️",
        "中文字符和日本語のテキスト、한국어 텍스트。",
        "العربية ٠١٢٣ مرحبا، عالم! שלום",
        "ไทย ภาษาไทย ລາວ မြန်မာ ខ្មែរ",
        "१२३ ٣ ۴ ៥ ൬ １２３ 𝟙𝟚",
        "!!! ... ?!?! --- ((( ))) «»„“ ¿¡ … — – ‐",
        "a\u00A0b\u3000c\u0085d\u2028e\u2029f\u1680g\u202Fh\u205Fi\u180Ej\u200Bk\uFEFFl",
        "tab\there\nnew\r\nline\vvt\fff",
        "a_b c‿d e⁀f ＿",
        "x\u20DDy \u0488\u0489",
        "zero\u200Dwidth\u200Cjoiners \u200D \u200C",
        "a\uD800b",
        "\uFFFD\uFFFE\uE000\U000F0000",
        "ǅungla ʰʲ ᵃ ꜰ ß ẞ ﬁ",
        "Ελληνικά Кириллица Ѐ Ա Ⴀ ᏣᎳᎩ ᐃᓄᒃᑎᑐᑦ",
    ];

    private string WriteTemp(string json)
    {
        string path = Path.Combine(Path.GetTempPath(), "wl-oracle-" + Guid.NewGuid().ToString("N") + ".json");
        File.WriteAllText(path, json, new UTF8Encoding(false));
        _tempFiles.Add(path);
        return path;
    }

    private static readonly string AddedTokensJson = """
        [{"id":0,"content":"[UNK]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
         {"id":1,"content":"[PAD]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
         {"id":2,"content":"[SOS]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
         {"id":3,"content":"[EOS]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
         {"id":9000,"content":"<m>","single_word":false,"lstrip":true,"rstrip":true,"normalized":false,"special":true},
         {"id":9001,"content":"<m>x","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":false},
         {"id":9002,"content":"ab","single_word":true,"lstrip":false,"rstrip":false,"normalized":true,"special":false},
         {"id":9003,"content":"नेपाल","single_word":true,"lstrip":false,"rstrip":false,"normalized":false,"special":false},
         {"id":9004,"content":"[SO","single_word":false,"lstrip":false,"rstrip":false,"normalized":true,"special":false}]
        """;

    /// <summary>
    /// A WordLevel tokenizer whose vocabulary holds every pre-token of <paramref name="texts"/> (as this library
    /// splits them) and every single code point in them, so that a different split shows up as different ids.
    /// </summary>
    private string SyntheticTokenizer(IEnumerable<string> texts, string addedTokens, string preTokenizer = """{"type":"Whitespace"}""")
    {
        var vocab = new Dictionary<string, int> { ["[UNK]"] = 0, ["[PAD]"] = 1, ["[SOS]"] = 2, ["[EOS]"] = 3 };
        void Add(string word)
        {
            if (!vocab.ContainsKey(word) && !word.Contains('\uFFFD'))
            {
                vocab[word] = vocab.Count;
            }
        }

        foreach (string text in texts)
        {
            // Unpaired surrogates become U+FFFD here (as in the UTF-8 text the oracle sees); such words are skipped.
            string clean = string.Concat(text.EnumerateRunes().Select(r => r.ToString()));
            foreach ((int index, int length) in WhitespacePreTokenizer.Split(clean))
            {
                Add(clean.Substring(index, length));
            }

            foreach (Rune rune in clean.EnumerateRunes())
            {
                Add(rune.ToString());
            }
        }

        string json = JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = JsonDocument.Parse(addedTokens).RootElement,
            ["normalizer"] = null,
            ["pre_tokenizer"] = JsonDocument.Parse(preTokenizer).RootElement,
            ["post_processor"] = null,
            ["decoder"] = null,
            ["model"] = new Dictionary<string, object> { ["type"] = "WordLevel", ["vocab"] = vocab, ["unk_token"] = "[UNK]" },
        });
        return WriteTemp(json);
    }

    private static void AssertSameIds(WordLevelTokenizer ours, HfTokenizer oracle, IEnumerable<string> texts)
    {
        var failures = new List<string>();
        int checkedCount = 0;
        foreach (string text in texts)
        {
            int[] expected = HfOracle.Encode(oracle, text);
            int[] actual = ours.EncodeToIds(text).ToArray();
            checkedCount++;
            if (!expected.SequenceEqual(actual))
            {
                string pieces = string.Join(" | ", ours.EncodeToTokens(text, out _).Select(t => t.Value));
                failures.Add($"{Escape(text)}\n    HF:   [{string.Join(",", expected)}]\n    ours: [{string.Join(",", actual)}] ({pieces})");
            }
            else
            {
                Assert.Equal(expected.Length, ours.CountTokens(text));
            }
        }

        Assert.True(checkedCount > 0);
        Assert.True(failures.Count == 0, $"{failures.Count} of {checkedCount} strings differ from Hugging Face:\n" + string.Join("\n", failures.Take(25)));
    }

    private static string Escape(string text)
    {
        var sb = new StringBuilder("\"");
        foreach (Rune rune in text.EnumerateRunes())
        {
            sb.Append(rune.Value is >= 0x20 and < 0x7F ? rune.ToString() : $"\\u{{{rune.Value:X4}}}");
        }

        return sb.Append('"').ToString();
    }

    [OracleFact]
    public void FixtureTokenizersMatchOnTrickyStrings()
    {
        foreach (string fixture in TokenizerFixtures.Names)
        {
            foreach (string file in new[] { "tokenizer_en.json", "tokenizer_ne.json" })
            {
                string path = TokenizerFixtures.PathOf(fixture, file);
                AssertSameIds(WordLevelTokenizer.Create(path), HfOracle.Load(path), TrickyStrings);
            }
        }
    }

    [OracleFact]
    public void FixtureSentencesMatchOracle()
    {
        using JsonDocument doc = JsonDocument.Parse(File.ReadAllText(TokenizerFixtures.PathOf("thinam-tiny", "expected.json")));
        string[] sources = doc.RootElement.GetProperty("sentences").EnumerateArray().Select(s => s.GetProperty("src").GetString()!).ToArray();
        string path = TokenizerFixtures.PathOf("thinam-tiny", "tokenizer_en.json");
        AssertSameIds(WordLevelTokenizer.Create(path), HfOracle.Load(path), sources);
    }

    [OracleFact]
    public void SyntheticVocabularyWithAddedTokenFlagsMatchesOnTrickyStrings()
    {
        string path = SyntheticTokenizer(TrickyStrings, AddedTokensJson);
        WordLevelTokenizer ours = WordLevelTokenizer.Create(path);
        Assert.True(ours.VocabularySize > 300, "the synthetic vocabulary should be large");
        AssertSameIds(ours, HfOracle.Load(path), TrickyStrings);
    }

    [OracleFact]
    public void WhitespaceSplitMatchesOnTrickyStrings()
    {
        string path = SyntheticTokenizer(TrickyStrings, AddedTokensJson, """{"type":"WhitespaceSplit"}""");
        AssertSameIds(WordLevelTokenizer.Create(path), HfOracle.Load(path), TrickyStrings);
    }

    // Units random strings are built from: interesting code points, weighted towards separators, plus the
    // added tokens' texts so that they appear embedded in words.
    private static readonly string[] Pool =
    [
        "a", "b", "x", "Z", "0", "7", "_", " ", " ", " ", " ", "  ", "\t", "\n", ".", ",", "!", "-", "[", "]", "<", ">",
        "[SOS]", "[EOS]", "[PAD]", "[UNK]", "<m>", "<m>x", "ab", "[SO", "नेपाल",
        "क", "ख", "न", "प", "ल", "ा", "ि", "ी", "ु", "ू", "ृ", "े", "ै", "ो", "ौ", "्", "़", "ं", "ः", "ँ", "।", "५",
        "\u0301", "\u0308", "\u20DD", "\u200D", "\u200C", "\u200B", "\uFEFF", "\u00A0", "\u3000", "\u0085", "\u2028", "\u1680", "\u180E",
        "😊", "👍", "\U0001F3FD", "🇳", "\U0001D400", "\U0001D7CE", "Ⓐ", "ⓩ", "🄰", "①", "²", "½", "Ⅻ", "ⅻ",
        "中", "文", "。", "、", "ア", "ー", "한", "ب", "ع", "٣", "،", "ש", "ไ", "่", "೯", "１", "＿", "‿", "€", "©", "«", "…", "é", "ß", "ǅ", "ʰ",
    ];

    private static List<string> RandomStrings(int seed, int count)
    {
        var random = new Random(seed);
        var result = new List<string>(count);
        var sb = new StringBuilder();
        for (int i = 0; i < count; i++)
        {
            sb.Clear();
            int units = random.Next(1, 16);
            for (int j = 0; j < units; j++)
            {
                sb.Append(Pool[random.Next(Pool.Length)]);
            }

            result.Add(sb.ToString());
        }

        return result;
    }

    [OracleFact]
    public void RandomStringsMatchOracle()
    {
        // The vocabulary comes from a different random batch, so that the tested strings' words are only
        // sometimes known (both known and unknown words are exercised).
        List<string> texts = RandomStrings(seed: 20260101, count: 3000);
        string path = SyntheticTokenizer(RandomStrings(seed: 7, count: 3000).Concat(Pool), AddedTokensJson);
        AssertSameIds(WordLevelTokenizer.Create(path), HfOracle.Load(path), texts);
    }

    [OracleFact]
    public void DecodeMatchesOracle()
    {
        string path = SyntheticTokenizer(TrickyStrings, AddedTokensJson);
        WordLevelTokenizer ours = WordLevelTokenizer.Create(path);
        HfTokenizer oracle = HfOracle.Load(path);
        var random = new Random(11);
        int[] specialIds = [0, 1, 2, 3, ours.TokenToId("<m>")!.Value];
        for (int i = 0; i < 300; i++)
        {
            int[] ids = Enumerable.Range(0, random.Next(0, 12))
                .Select(_ => random.Next(4) == 0 ? specialIds[random.Next(specialIds.Length)] : random.Next(ours.VocabularySize))
                .ToArray();
            Assert.Equal(oracle.Decode(ids.Select(id => (uint)id).ToArray()), ours.Decode(ids));
        }
    }

    /// <summary>
    /// Every code point U+0000..U+10FFFF (surrogates excluded) between two word characters, against the oracle:
    /// "a{c}a" encodes to [UNK] when c is a word character, [a, UNK, a] when it is punctuation-class and [a, a]
    /// when it is white space, so the id sequences pin down the classification of each code point.
    /// </summary>
    [OracleFact]
    public void EveryCodePointIsClassifiedLikeHuggingFace()
    {
        string json = """{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,"model":{"type":"WordLevel","vocab":{"[UNK]":0,"a":1},"unk_token":"[UNK]"}}""";
        string path = WriteTemp(json);
        WordLevelTokenizer ours = WordLevelTokenizer.Create(path);
        HfTokenizer oracle = HfOracle.Load(path);

        var mismatches = new List<string>();
        int chunks = 0;
        const int chunk = 4096;
        for (int first = 1; first <= 0x10FFFF; first += chunk)
        {
            var codePoints = Enumerable.Range(first, Math.Min(chunk, 0x110000 - first))
                .Where(cp => cp is < 0xD800 or > 0xDFFF).ToArray();
            string text = string.Join(" ", codePoints.Select(cp => "a" + char.ConvertFromUtf32(cp) + "a"));
            chunks++;
            if (HfOracle.Encode(oracle, text).SequenceEqual(ours.EncodeToIds(text)))
            {
                continue;
            }

            foreach (int cp in codePoints)
            {
                string one = "a" + char.ConvertFromUtf32(cp) + "a";
                int[] hf = HfOracle.Encode(oracle, one);
                int[] mine = ours.EncodeToIds(one).ToArray();
                if (!hf.SequenceEqual(mine))
                {
                    mismatches.Add($"U+{cp:X4} {CharUnicodeInfo.GetUnicodeCategory(cp)}: HF [{string.Join(",", hf)}] ours [{string.Join(",", mine)}]");
                }
            }
        }

        Assert.Equal(272, chunks);
        Assert.True(mismatches.Count == 0, $"{mismatches.Count} code points classified differently:\n" + string.Join("\n", mismatches.Take(60)));
    }
}
