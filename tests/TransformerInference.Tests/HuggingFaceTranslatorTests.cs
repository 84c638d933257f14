using TransformerInference.Decoding;
using Xunit;

namespace TransformerInference.Tests;

/// <summary>Text in, text out for Hugging Face folders: the SentencePiece tokenizer, the model and the family's
/// generation rules together reproduce the reference's greedy translations.</summary>
public class HuggingFaceTranslatorTests
{
    public static TheoryData<string> Families => new() { "marian", "m2m100", "nllb" };

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
    public void UnknownLanguageIsRejectedAtLoad()
    {
        var e = Assert.ThrowsAny<ArgumentException>(() => Translator.Load(Fixtures.Path_("hf-tiny", "nllb"), new TranslatorOptions { TargetLanguage = "xx_Nope" }));
        Assert.Contains("xx_Nope", e.Message);
    }
}
