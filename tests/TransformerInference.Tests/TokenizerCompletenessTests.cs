using TransformerInference.Loading;
using Xunit;

namespace TransformerInference.Tests;

/// <summary>Issue 8 item 5: special-token strings typed in the text are split out as Hugging Face's slow tokenizers
/// do (the added-token trie cuts the text; each side is tokenized alone, so the pieces around the token are those of
/// the sides encoded separately), and a tokenizer that does not fit the model's embeddings is a typed error.</summary>
public class TokenizerCompletenessTests
{
    [Theory]
    [InlineData("nllb", "</s>")]
    [InlineData("nllb", "npi_Deva")]
    [InlineData("m2m100", "</s>")]
    [InlineData("m2m100", "__ne__")]
    [InlineData("mbart", "ne_NP")]
    [InlineData("t5", "</s>")]
    [InlineData("t5", "<pad>")]
    [InlineData("marian", "</s>")]
    [InlineData("marian", "<pad>")]
    public void ASpecialTokenTypedInTheTextBecomesItsId(string family, string special)
    {
        var tokenizer = ModelLoader.LoadTokenizer(Fixtures.Path_("hf-tiny", family));
        var id = Enumerable.Range(0, tokenizer.VocabularySize).Single(i => tokenizer.IdToToken(i) == special);
        var before = tokenizer.EncodeSource("I love you").ToArray();
        var after = tokenizer.EncodeSource("so much").ToArray();
        var both = tokenizer.EncodeSource($"I love you {special} so much").ToArray();
        // `before` without its final </s>, the special id, then `after` without its leading language code (if any).
        var expected = before[..^1].Append(id).Concat(after.Skip(FramingBefore(tokenizer, after))).ToArray();
        Assert.Equal(expected, both);
        Assert.DoesNotContain(tokenizer.UnknownId, both);
    }

    /// <summary>Ids the tokenizer puts before the text (the language code of M2M100, NLLB and mBART-50).</summary>
    private static int FramingBefore(TransformerInference.Tokenization.SentencePieceTranslationTokenizer tokenizer, int[] encoded) =>
        tokenizer.IsSpecialToken(encoded[0]) && encoded[0] != tokenizer.EndOfSentenceId ? 1 : 0;

    [Fact]
    public void SwappedSeedTokenizersAreATypedErrorNamingBothSizes()
    {
        // seed-tiny: English 47 ids (source embedding 47 rows), Nepali 69 ids (target 69 rows).
        var e = Assert.Throws<InvalidDataException>(() => Translator.Load(Fixtures.Path_("seed-tiny", "tmodel.pt"),
            Fixtures.Path_("seed-tiny", "tokenizer_ne.json"), Fixtures.Path_("seed-tiny", "tokenizer_en.json")));
        Assert.Contains("69", e.Message);
        Assert.Contains("47", e.Message);
        Assert.Contains("source", e.Message);
    }
}
