namespace TransformerInference.Tokenization;

/// <summary>
/// What a <see cref="Translator"/> needs from a model's tokenizer: source text framed as the model's encoder input
/// (special tokens, language codes), the token a target language forces first, and text from generated ids. Each
/// tokenizer frames its own inputs; the translator never asks which kind it is.
/// </summary>
public interface ITranslationTokenizer
{
    /// <summary>Encodes source text as the encoder input, special tokens included.</summary>
    /// <param name="text">The text.</param>
    /// <param name="sourceLanguage">The source language of multilingual tokenizers (null: the default); must be null
    /// for tokenizers without language tokens.</param>
    /// <returns>The ids.</returns>
    /// <exception cref="ArgumentException">The language is unknown or not accepted.</exception>
    IReadOnlyList<int> EncodeSource(string text, string? sourceLanguage = null);

    /// <summary>The token the decoder must produce first for <paramref name="targetLanguage"/> (multilingual models:
    /// the language token), or null when the model needs none.</summary>
    /// <param name="targetLanguage">The target language, or null for the tokenizer's default.</param>
    /// <returns>The id, or null.</returns>
    /// <exception cref="ArgumentException">The language is unknown, or a needed language is missing.</exception>
    int? TargetLanguageToken(string? targetLanguage);

    /// <summary>Decodes generated ids to text, special tokens dropped.</summary>
    /// <param name="ids">The ids.</param>
    /// <returns>The text.</returns>
    string Decode(IEnumerable<int> ids);

    /// <summary>Whether <paramref name="id"/> is a special token of the framing (kept when an input is truncated).</summary>
    /// <param name="id">The id.</param>
    /// <returns>True for special tokens.</returns>
    bool IsSpecialToken(int id);

    /// <summary>Number of source-side ids: the encoder's embedding must have at least this many rows.</summary>
    int SourceVocabularySize { get; }

    /// <summary>Number of target-side ids: the decoder's embedding must have at least this many rows.</summary>
    int TargetVocabularySize { get; }
}

/// <summary>
/// The seed models' framing over two Microsoft.ML.Tokenizers tokenizers (WordLevel <c>tokenizer.json</c> files):
/// <c>[SOS] ids [EOS]</c> with the source tokenizer, decoding with the target tokenizer.
/// </summary>
internal sealed class SeedTokenizerPair : ITranslationTokenizer
{
    private readonly Microsoft.ML.Tokenizers.Tokenizer _source, _target;
    private readonly int _sos, _eos;

    /// <summary>Frames with the source tokenizer's <c>[SOS]</c>/<c>[EOS]</c> (a WordLevel tokenizer must have them),
    /// else the model's ids.</summary>
    public SeedTokenizerPair(Microsoft.ML.Tokenizers.Tokenizer source, Microsoft.ML.Tokenizers.Tokenizer target, int sos, int eos, int pad)
    {
        _source = source;
        _target = target;
        int Special(string token, int fallback) => source is WordLevelTokenizer w
            ? w.TokenToId(token) ?? throw new InvalidDataException($"The source tokenizer has no {token} token.")
            : fallback;
        _sos = Special("[SOS]", sos);
        _eos = Special("[EOS]", eos);
        var sourcePad = Special("[PAD]", pad);
        if (sourcePad != pad)
            throw new ArgumentException($"The source tokenizer's [PAD] is {sourcePad}, the model's padding id is {pad}.", nameof(source));
        SourceVocabularySize = (source as WordLevelTokenizer)?.VocabularySize ?? 0;
        TargetVocabularySize = (target as WordLevelTokenizer)?.VocabularySize ?? 0;
    }

    public int SourceVocabularySize { get; }

    public int TargetVocabularySize { get; }

    public IReadOnlyList<int> EncodeSource(string text, string? sourceLanguage = null)
    {
        if (sourceLanguage is not null) throw new ArgumentException("Seed models take no source language.", nameof(sourceLanguage));
        var ids = _source.EncodeToIds(text);
        if (ids.Count == 0) return Array.Empty<int>();
        var framed = new int[ids.Count + 2];
        framed[0] = _sos;
        for (var i = 0; i < ids.Count; i++) framed[i + 1] = ids[i];
        framed[^1] = _eos;
        return framed;
    }

    public int? TargetLanguageToken(string? targetLanguage) => targetLanguage is null
        ? null
        : throw new ArgumentException("Seed models take no target language.", nameof(targetLanguage));

    public string Decode(IEnumerable<int> ids) => _target.Decode(ids);

    public bool IsSpecialToken(int id) => id == _sos || id == _eos;
}
