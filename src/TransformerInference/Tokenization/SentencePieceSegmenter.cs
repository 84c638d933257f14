using Microsoft.ML.Tokenizers;

namespace TransformerInference.Tokenization;

/// <summary>
/// One SentencePiece model file: normalizes text as the model's normalizer does and splits it into pieces with
/// Microsoft.ML.Tokenizers' <see cref="SentencePieceTokenizer"/>, merging runs of unknown characters into one
/// piece as <c>sentencepiece</c> does (the piece text is the characters themselves).
/// </summary>
internal sealed class SentencePieceSegmenter
{
    private readonly SentencePieceTokenizer _model;
    private readonly SentencePieceNormalization _normalization;

    private SentencePieceSegmenter(SentencePieceTokenizer model, SentencePieceNormalization normalization, string path)
    {
        _model = model;
        _normalization = normalization;
        Path = path;
        Vocabulary = model.Vocabulary;
        UnknownId = model.UnknownId;
        ControlPieces = new HashSet<string>(StringComparer.Ordinal) { model.BeginningOfSentenceToken, model.EndOfSentenceToken };
    }

    public string Path { get; }

    /// <summary>Piece → SentencePiece id.</summary>
    public IReadOnlyDictionary<string, int> Vocabulary { get; }

    public int UnknownId { get; }

    /// <summary>Number of pieces in the model.</summary>
    public int Count => Vocabulary.Count;

    /// <summary>Pieces that <c>sentencepiece</c> decodes to nothing (<c>&lt;s&gt;</c>, <c>&lt;/s&gt;</c>).</summary>
    public IReadOnlySet<string> ControlPieces { get; }

    public static SentencePieceSegmenter Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"SentencePiece model '{path}' was not found.", path);
        }

        byte[] bytes = File.ReadAllBytes(path);
        SentencePieceTokenizer model;
        try
        {
            using var stream = new MemoryStream(bytes, writable: false);
            model = SentencePieceTokenizer.Create(stream, false, false, null);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidDataException($"SentencePiece model '{path}' could not be loaded: {e.Message}", e);
        }

        if (model.ByteFallback)
        {
            throw new NotSupportedException($"SentencePiece model '{path}' uses byte fallback, which is not supported.");
        }

        if (model.TreatWhitespaceAsSuffix)
        {
            throw new NotSupportedException($"SentencePiece model '{path}' treats white space as a suffix, which is not supported.");
        }

        return new SentencePieceSegmenter(model, SentencePieceNormalization.Read(bytes, path), path);
    }

    /// <summary>Normalizes <paramref name="text"/> and splits it into pieces.</summary>
    /// <param name="text">Raw text.</param>
    /// <param name="normalized">The normalized text (<c>▁</c> for spaces) that piece offsets refer to.</param>
    /// <returns>The pieces in order; <c>Unknown</c> marks pieces the model does not hold.</returns>
    public List<Piece> Split(string text, out string normalized)
    {
        normalized = _normalization.Normalize(text);
        var pieces = new List<Piece>();
        if (normalized.Length == 0)
        {
            return pieces;
        }

        IReadOnlyList<EncodedToken> tokens = _model.EncodeToTokens(
            normalized, out _, false, false, false, false); // no BOS/EOS, no pre-tokenization, already normalized
        foreach (EncodedToken token in tokens)
        {
            (int start, int length) = token.Offset.GetOffsetAndLength(normalized.Length);
            bool unknown = token.Id == UnknownId;
            if (unknown && pieces.Count > 0 && pieces[^1].Unknown && pieces[^1].End == start)
            {
                Piece previous = pieces[^1];
                pieces[^1] = previous with { Text = normalized[previous.Start..(start + length)], Length = start + length - previous.Start };
                continue;
            }

            pieces.Add(new Piece(normalized.Substring(start, length), start, length, unknown));
        }

        return pieces;
    }

    /// <summary>A piece of normalized text.</summary>
    internal readonly record struct Piece(string Text, int Start, int Length, bool Unknown)
    {
        public int End => Start + Length;
    }
}
