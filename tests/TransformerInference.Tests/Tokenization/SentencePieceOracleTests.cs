using System.IO.Compression;
using System.Text.Json;
using System.Text.RegularExpressions;
using TransformerInference.Tokenization;
using Xunit;

namespace TransformerInference.Tests.Tokenization;

/// <summary>
/// Segmentation against python sentencepiece on 16k-piece BPE and unigram models (Fixtures/spm-oracle: held-out
/// English, Devanagari, mixed-script and adversarial lines — runs of repeated characters, digits, punctuation,
/// periodic patterns, unknown characters, NFKC cases). Every line must give sentencepiece's ids, through the
/// segmenter and through each family's tokenizer wrapping the same model.
/// </summary>
public partial class SentencePieceOracleTests
{
    public static readonly TheoryData<string> Kinds = ["bpe", "unigram"];

    private static readonly Lazy<List<(string Text, Dictionary<string, int[]> Ids)>> Lines = new(() => ReadLines("expected.jsonl.gz"));
    private static readonly Lazy<List<(string Text, Dictionary<string, int[]> Ids)>> SpecialLines = new(() => ReadLines("special.jsonl.gz"));

    private static string ModelPath(string kind) => Fixtures.Path_("spm-oracle", $"{kind}16k.model");

    private static List<(string, Dictionary<string, int[]>)> ReadLines(string file)
    {
        var lines = new List<(string, Dictionary<string, int[]>)>();
        using var gzip = new GZipStream(File.OpenRead(Fixtures.Path_("spm-oracle", file)), CompressionMode.Decompress);
        using var reader = new StreamReader(gzip);
        while (reader.ReadLine() is string line)
        {
            using JsonDocument doc = JsonDocument.Parse(line);
            JsonElement row = doc.RootElement;
            var ids = new Dictionary<string, int[]>();
            foreach (string kind in Kinds)
            {
                ids[kind] = row.GetProperty(kind).Ints();
            }

            lines.Add((row.GetProperty("text").GetString()!, ids));
        }

        return lines;
    }

    [Fact]
    public void Oracle_is_large_enough()
    {
        Assert.True(Lines.Value.Count >= 5000, $"{Lines.Value.Count} lines");
        foreach (string kind in Kinds)
        {
            Assert.True(SentencePieceSegmenter.Load(ModelPath(kind)).Count >= 16000);
        }
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Segmenter_gives_sentencepiece_ids_on_every_line(string kind)
    {
        SentencePieceSegmenter segmenter = SentencePieceSegmenter.Load(ModelPath(kind));
        AssertAllLines(kind, "segmenter", text => [.. segmenter.Split(text, out _).Select(p => p.Id)], ids => ids);
    }

    /// <summary>Small models (2,000 pieces) with user-defined pieces (kept whole) and one normal piece in seven of
    /// two or more characters marked unused (BPE splits it back into the pair it was merged from; unigram never
    /// emits it), on 2,500 lines with user-defined pieces inserted.</summary>
    [Theory]
    [MemberData(nameof(Kinds))]
    public void Segmenter_follows_sentencepiece_on_user_defined_and_unused_pieces(string kind)
    {
        SentencePieceSegmenter segmenter = SentencePieceSegmenter.Load(Fixtures.Path_("spm-oracle", $"{kind}-special.model"));
        AssertAllLines(kind, "special", text => [.. segmenter.Split(text, out _).Select(p => p.Id)], ids => ids, SpecialLines.Value, minimum: 2500);
    }

    /// <summary>Byte-fallback models (1,000 pieces, <c>byte_fallback</c> true, made by make_byte_fallback.py): a
    /// character the model does not hold becomes the <c>&lt;0xNN&gt;</c> pieces of its UTF-8 bytes, id for id with
    /// sentencepiece on 1,520 lines (emoji, CJK, Arabic, rare Devanagari…); decoding the ids gives sentencepiece's
    /// text, and invalid byte runs one U+FFFD per byte.</summary>
    [Theory]
    [MemberData(nameof(Kinds))]
    public void Byte_fallback_gives_sentencepiece_ids_and_decodes_its_bytes(string kind)
    {
        SentencePieceSegmenter segmenter = SentencePieceSegmenter.Load(Fixtures.Path_("spm-oracle", $"{kind}-bytefallback.model"));
        string[] pieces = Pieces(segmenter);
        int lines = 0, withBytes = 0, differences = 0;
        string? first = null;
        using var gzip = new GZipStream(File.OpenRead(Fixtures.Path_("spm-oracle", "bytefallback.jsonl.gz")), CompressionMode.Decompress);
        using var reader = new StreamReader(gzip);
        while (reader.ReadLine() is string line)
        {
            using JsonDocument doc = JsonDocument.Parse(line);
            string text = doc.RootElement.GetProperty("text").GetString()!;
            int[] expected = doc.RootElement.GetProperty(kind).Ints();
            int[] actual = [.. segmenter.Split(text, out _).Select(p => p.Id)];
            string decoded = SentencePieceTranslationTokenizer.DecodePieces([.. expected.Select(id => pieces[id])], segmenter);
            if (!actual.SequenceEqual(expected) || decoded != doc.RootElement.GetProperty(kind + "_decoded").GetString())
            {
                differences++;
                first ??= $"{text}: [{string.Join(' ', actual)}] vs [{string.Join(' ', expected)}], '{decoded}'";
            }

            withBytes += expected.Any(id => segmenter.IsByte(id, out _)) ? 1 : 0;
            lines++;
        }

        Assert.True(differences == 0, $"{differences} of {lines} lines differ; first: {first}");
        Assert.True(lines >= 1500 && withBytes >= 100, $"{lines} lines, {withBytes} with byte pieces");
        foreach (JsonElement c in Fixtures.Json("spm-oracle", "bytefallback-decode.json").GetProperty(kind).EnumerateArray())
        {
            Assert.Equal(c.GetProperty("decoded").GetString(),
                SentencePieceTranslationTokenizer.DecodePieces([.. c.GetProperty("ids").Ints().Select(id => pieces[id])], segmenter));
        }
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Marian_tokenizer_gives_sentencepiece_ids_on_every_line(string kind)
    {
        using var folder = new TemporaryFolder();
        SentencePieceSegmenter segmenter = SentencePieceSegmenter.Load(ModelPath(kind));
        string[] pieces = Pieces(segmenter);

        // vocab.json as Marian writes it: </s> 0, <unk> 1, the other pieces, <pad> last.
        var vocab = new Dictionary<string, int> { ["</s>"] = 0, ["<unk>"] = 1 };
        foreach (string piece in pieces)
        {
            vocab.TryAdd(piece, vocab.Count);
        }

        vocab.TryAdd("<pad>", vocab.Count);
        File.Copy(ModelPath(kind), Path.Combine(folder.Path, "source.spm"));
        File.Copy(ModelPath(kind), Path.Combine(folder.Path, "target.spm"));
        File.WriteAllText(Path.Combine(folder.Path, "vocab.json"), JsonSerializer.Serialize(vocab));
        WriteConfig(folder.Path, new { tokenizer_class = "MarianTokenizer", eos_token = "</s>", unk_token = "<unk>", pad_token = "<pad>", separate_vocabs = false });
        SentencePieceTranslationTokenizer tokenizer = SentencePieceTranslationTokenizer.Create(folder.Path);

        // MarianTokenizer cuts ">>xx<<" language codes out of the text first; lines holding one are left out.
        AssertAllLines(
            kind,
            "marian",
            text => MarianCode().IsMatch(text) ? null : tokenizer.EncodeSource(text).ToArray(),
            ids => [.. ids.Select(id => vocab[pieces[id]]), tokenizer.EndOfSentenceId]);
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void M2M100_tokenizer_gives_sentencepiece_ids_on_every_line(string kind)
    {
        using var folder = new TemporaryFolder();
        string[] pieces = Pieces(SentencePieceSegmenter.Load(ModelPath(kind)));

        // vocab.json as fairseq orders it: <s> <pad> </s> <unk>, then the other pieces.
        var vocab = new Dictionary<string, int> { ["<s>"] = 0, ["<pad>"] = 1, ["</s>"] = 2, ["<unk>"] = 3 };
        foreach (string piece in pieces)
        {
            vocab.TryAdd(piece, vocab.Count);
        }

        File.Copy(ModelPath(kind), Path.Combine(folder.Path, "sentencepiece.bpe.model"));
        File.WriteAllText(Path.Combine(folder.Path, "vocab.json"), JsonSerializer.Serialize(vocab));
        WriteConfig(folder.Path, new { tokenizer_class = "M2M100Tokenizer", src_lang = "en", tgt_lang = "ne", eos_token = "</s>", unk_token = "<unk>", pad_token = "<pad>", bos_token = "<s>" });
        SentencePieceTranslationTokenizer tokenizer = SentencePieceTranslationTokenizer.Create(folder.Path);
        int en = tokenizer.LanguageId("en");
        Assert.Equal(vocab.Count + 18, en); // "en" is the 19th M2M100 language code

        AssertAllLines(
            kind,
            "m2m100",
            text => tokenizer.EncodeSource(text).ToArray(),
            ids => [en, .. ids.Select(id => vocab[pieces[id]]), 2]);
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Nllb_tokenizer_gives_sentencepiece_ids_on_every_line(string kind)
    {
        using var folder = new TemporaryFolder();
        SentencePieceSegmenter segmenter = SentencePieceSegmenter.Load(ModelPath(kind));
        int count = segmenter.Count;
        File.Copy(ModelPath(kind), Path.Combine(folder.Path, "sentencepiece.bpe.model"));
        string[] added = ["<s>", "<pad>", "</s>", "<unk>"];
        var decoder = new Dictionary<string, object>();
        for (int i = 0; i < added.Length; i++)
        {
            decoder[i.ToString(System.Globalization.CultureInfo.InvariantCulture)] = new { content = added[i], special = true };
        }

        string[] languages = ["eng_Latn", "npi_Deva", "<mask>"];
        for (int i = 0; i < languages.Length; i++)
        {
            decoder[(count + 1 + i).ToString(System.Globalization.CultureInfo.InvariantCulture)] = new { content = languages[i], special = true };
        }

        WriteConfig(folder.Path, new
        {
            tokenizer_class = "NllbTokenizer",
            src_lang = "eng_Latn",
            tgt_lang = "npi_Deva",
            bos_token = "<s>",
            eos_token = "</s>",
            unk_token = "<unk>",
            pad_token = "<pad>",
            mask_token = "<mask>",
            legacy_behaviour = false,
            additional_special_tokens = new[] { "eng_Latn", "npi_Deva" },
            added_tokens_decoder = decoder,
        });
        SentencePieceTranslationTokenizer tokenizer = SentencePieceTranslationTokenizer.Create(folder.Path);

        // NllbTokenizer: spm id + 1 (fairseq offset), spm's unknown id 0 → 3.
        AssertAllLines(
            kind,
            "nllb",
            text => tokenizer.EncodeSource(text).ToArray(),
            ids => [count + 1, .. ids.Select(id => id == segmenter.UnknownId ? 3 : id + 1), 2]);
    }

    private static string[] Pieces(SentencePieceSegmenter segmenter)
    {
        var pieces = new string[segmenter.Count];
        foreach ((string piece, int id) in segmenter.Vocabulary)
        {
            pieces[id] = piece;
        }

        return pieces;
    }

    private static void WriteConfig(string folder, object config)
        => File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), JsonSerializer.Serialize(config));

    /// <summary>Encodes every oracle line (<paramref name="encode"/> may return null to leave a line out) and
    /// asserts that none differs from sentencepiece's ids mapped by <paramref name="expected"/>.</summary>
    private static void AssertAllLines(
        string kind,
        string what,
        Func<string, int[]?> encode,
        Func<int[], int[]> expected,
        List<(string Text, Dictionary<string, int[]> Ids)>? lines = null,
        int minimum = 5000)
    {
        int compared = 0;
        var differences = new List<string>();
        foreach ((string text, Dictionary<string, int[]> ids) in lines ?? Lines.Value)
        {
            int[]? actual = encode(text);
            if (actual is null)
            {
                continue;
            }

            compared++;
            int[] want = expected(ids[kind]);
            if (!want.SequenceEqual(actual))
            {
                differences.Add($"{JsonSerializer.Serialize(text)}: sentencepiece [{string.Join(' ', want)}], ours [{string.Join(' ', actual)}]");
            }
        }

        Assert.True(compared >= minimum, $"{kind}/{what}: only {compared} lines compared");
        Assert.True(differences.Count == 0, $"{kind}/{what}: {differences.Count} of {compared} lines differ:\n{string.Join('\n', differences.Take(10))}");
    }

    [GeneratedRegex(">>.+<<")]
    private static partial Regex MarianCode();

    private sealed class TemporaryFolder : IDisposable
    {
        public string Path { get; } = Directory.CreateTempSubdirectory("spm-oracle-").FullName;

        public void Dispose() => Directory.Delete(Path, recursive: true);
    }
}
