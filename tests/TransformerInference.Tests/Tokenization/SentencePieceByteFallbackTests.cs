using System.Text.Json;
using TransformerInference.Tokenization;
using Xunit;

namespace TransformerInference.Tests.Tokenization;

/// <summary>
/// Byte-fallback SentencePiece models (Fixtures/spm-bytefallback, made by its make_oracle.py with python
/// sentencepiece 0.1.97): a character the model does not hold becomes one <c>&lt;0xXX&gt;</c> piece per UTF-8 byte,
/// and decoding turns runs of byte pieces back into text (U+FFFD for each byte that starts no valid sequence).
/// Every case must give python's ids and decoded text, through the segmenter and through the T5 tokenizer.
/// </summary>
public class SentencePieceByteFallbackTests
{
    public static readonly TheoryData<string> Kinds = ["bpe", "unigram"];

    private static readonly Lazy<List<Case>> Cases = new(() =>
    {
        var cases = new List<Case>();
        foreach (string line in File.ReadLines(Fixtures.Path_("spm-bytefallback", "expected.jsonl")))
        {
            using JsonDocument doc = JsonDocument.Parse(line);
            JsonElement row = doc.RootElement;
            cases.Add(new Case(row.GetProperty("model").GetString()!, row.GetProperty("text").GetString(), row.GetProperty("ids").Ints(), row.GetProperty("decoded").GetString()!, row.GetProperty("stripped").GetString()!));
        }

        return cases;
    });

    private static string ModelPath(string kind) => Fixtures.Path_("spm-bytefallback", $"{kind}-bf.model");

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Segmenter_gives_sentencepiece_ids_with_byte_pieces_for_unknown_characters(string kind)
    {
        SentencePieceSegmenter segmenter = SentencePieceSegmenter.Load(ModelPath(kind));
        Assert.True(segmenter.ByteFallback);
        List<Case> lines = [.. Cases.Value.Where(c => c.Model == kind && c.Text is not null)];
        Assert.True(lines.Count >= 300, $"{lines.Count} lines");

        // The oracle is about byte pieces: most lines must hold some, and no line may hold the unknown id.
        Assert.True(lines.Count(c => c.Ids.Any(id => segmenter.IsByte(id, out _))) >= 300);
        Assert.DoesNotContain(lines, c => c.Ids.Contains(segmenter.UnknownId));

        var differences = new List<string>();
        foreach (Case line in lines)
        {
            int[] ours = [.. segmenter.Split(line.Text!, out _).Select(p => p.Id)];
            if (!ours.SequenceEqual(line.Ids))
            {
                differences.Add($"{JsonSerializer.Serialize(line.Text)}: sentencepiece [{string.Join(' ', line.Ids)}], ours [{string.Join(' ', ours)}]");
            }
        }

        Assert.True(differences.Count == 0, $"{kind}: {differences.Count} of {lines.Count} lines differ:\n{string.Join('\n', differences.Take(10))}");
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Byte_pieces_cover_the_characters_they_replace(string kind)
    {
        SentencePieceSegmenter segmenter = SentencePieceSegmenter.Load(ModelPath(kind));
        List<SentencePieceSegmenter.Piece> pieces = segmenter.Split("the 😀", out string normalized);
        SentencePieceSegmenter.Piece[] bytes = [.. pieces.Where(p => segmenter.IsByte(p.Id, out _))];
        Assert.Equal(["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"], bytes.Select(p => p.Text));
        Assert.Equal([0, 0, 0, 2], bytes.Select(p => p.Length)); // the last byte holds the character, as in sentencepiece
        Assert.Equal("😀", normalized.Substring(bytes[^1].Start, bytes[^1].Length));
        Assert.All(bytes, p => Assert.False(p.Unknown));
    }

    [Fact]
    public void Byte_fallback_model_without_a_byte_piece_is_a_typed_error_naming_it()
    {
        // Turn the piece "<0x41>" from BYTE (type 6) into NORMAL (type 1): same length, the file stays valid.
        byte[] model = File.ReadAllBytes(ModelPath("bpe"));
        byte[] name = [0x0A, 6, .. "<0x41>"u8];
        int at = model.AsSpan().IndexOf(name);
        Assert.True(at > 0);
        int type = model.AsSpan(at, 16).IndexOf((ReadOnlySpan<byte>)[0x18, 6]);
        Assert.True(type > 0);
        model[at + type + 1] = 1;

        string path = Path.Combine(Path.GetTempPath(), $"bytefallback-{Guid.NewGuid():N}.model");
        File.WriteAllBytes(path, model);
        try
        {
            InvalidDataException error = Assert.Throws<InvalidDataException>(() => SentencePieceSegmenter.Load(path));
            Assert.Contains("<0x41>", error.Message);
            Assert.Contains(path, error.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void T5_tokenizer_encodes_and_decodes_as_sentencepiece(string kind)
    {
        string folder = Directory.CreateTempSubdirectory("spm-bytefallback-").FullName;
        try
        {
            File.Copy(ModelPath(kind), Path.Combine(folder, "spiece.model"));
            File.WriteAllText(
                Path.Combine(folder, "tokenizer_config.json"),
                JsonSerializer.Serialize(new { tokenizer_class = "T5Tokenizer", eos_token = "</s>", unk_token = "<unk>", pad_token = "<pad>", extra_ids = 0 }));
            SentencePieceTranslationTokenizer tokenizer = SentencePieceTranslationTokenizer.Create(folder);
            Assert.Equal(1, tokenizer.EndOfSentenceId);

            int compared = 0;
            var differences = new List<string>();
            foreach (Case c in Cases.Value.Where(c => c.Model == kind))
            {
                if (c.Text is not null)
                {
                    int[] ours = [.. tokenizer.EncodeSource(c.Text)];
                    if (!ours.SequenceEqual([.. c.Ids, 1]))
                    {
                        differences.Add($"encode {JsonSerializer.Serialize(c.Text)}: [{string.Join(' ', ours)}]");
                    }
                }

                // Hugging Face drops <pad>, </s> and <unk> with skip_special_tokens; sentencepiece decodes <unk> to " ⁇ ".
                // The other cases compare with sentencepiece's text stripped, as T5Tokenizer strips it.
                if (c.Ids.Any(id => id is 0 or 1 or 2))
                {
                    continue;
                }

                compared++;
                string decoded = tokenizer.Decode(c.Ids);
                if (decoded != c.Stripped)
                {
                    differences.Add($"decode [{string.Join(' ', c.Ids)}]: sentencepiece {JsonSerializer.Serialize(c.Stripped)}, ours {JsonSerializer.Serialize(decoded)}");
                }
            }

            Assert.True(compared >= 500, $"{compared} decodes compared");
            Assert.True(Cases.Value.Count(c => c.Model == kind && c.Decoded.Contains('\uFFFD') && c.Ids.All(id => id > 2)) >= 20); // invalid UTF-8 is exercised
            Assert.True(differences.Count == 0, $"{kind}: {differences.Count} differences:\n{string.Join('\n', differences.Take(10))}");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <param name="Decoded">sentencepiece's <c>decode(ids)</c>.</param>
    /// <param name="Stripped">The same after Python's <c>str.strip()</c>, as <c>T5Tokenizer.convert_tokens_to_string</c> returns it.</param>
    private sealed record Case(string Model, string? Text, int[] Ids, string Decoded, string Stripped);
}
