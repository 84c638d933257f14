using System.Buffers;
using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace TransformerInference.Tokenization;

/// <summary>
/// A Hugging Face <c>tokenizers</c> WordLevel tokenizer (<c>tokenizer.json</c> with a <c>WordLevel</c> model and a
/// <c>Whitespace</c> / <c>WhitespaceSplit</c> pre-tokenizer), giving the same tokens and ids as Hugging Face.
/// </summary>
/// <remarks>
/// Encoding first splits out the added tokens (such as <c>[SOS]</c>) found in the raw text, then splits the rest
/// into pre-tokens and maps each one to its id, or to the unknown-token id when it is not in the vocabulary.
/// Offsets are UTF-16 indices into the input text. Decoding drops special tokens and joins the others with single
/// spaces, like Hugging Face with no decoder. Instances are immutable and thread-safe.
/// There is no normalizer, so <c>considerNormalization</c> has no effect and the normalized text is always
/// <see langword="null"/>; with <c>considerPreTokenization: false</c> added tokens are still split out and each
/// remaining piece is looked up whole.
/// </remarks>
public sealed class WordLevelTokenizer : Tokenizer
{
    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocabBySpan;
    private readonly Dictionary<string, int> _addedByContent;
    private readonly Dictionary<int, string> _idToToken;
    private readonly HashSet<int> _specialIds;
    private readonly AddedTokenMatcher _nonNormalizedAdded;
    private readonly AddedTokenMatcher _normalizedAdded;
    private readonly bool _whitespaceSplitOnly;
    private readonly string _sourceName;

    private WordLevelTokenizer(
        Dictionary<string, int> vocab,
        string unknownToken,
        List<AddedToken> addedTokens,
        bool whitespaceSplitOnly,
        string sourceName)
    {
        _vocab = vocab;
        _vocabBySpan = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        _whitespaceSplitOnly = whitespaceSplitOnly;
        _sourceName = sourceName;
        UnknownToken = unknownToken;
        UnknownId = vocab[unknownToken];

        _idToToken = new Dictionary<int, string>(vocab.Count + addedTokens.Count);
        foreach (KeyValuePair<string, int> pair in vocab)
        {
            _idToToken[pair.Value] = pair.Key;
        }

        // Id assignment follows tokenizers' AddedVocabulary.add_tokens: an added token keeps the id its content
        // already has (added before, or in the model vocabulary), otherwise it gets the next free id after the
        // model vocabulary; the "id" written in the file is not used (Hugging Face only warns on a mismatch).
        _addedByContent = new Dictionary<string, int>(StringComparer.Ordinal);
        var addedById = new Dictionary<int, AddedToken>();
        int nextId = vocab.Count;
        foreach (AddedToken token in addedTokens)
        {
            if (token.Content.Length == 0)
            {
                continue; // Hugging Face ignores empty added tokens.
            }

            if (!_addedByContent.TryGetValue(token.Content, out int id) && !vocab.TryGetValue(token.Content, out id))
            {
                id = nextId++;
            }

            _addedByContent[token.Content] = id;
            addedById[id] = token;
        }

        _specialIds = [];
        var normalized = new List<(string, int, AddedToken)>();
        var nonNormalized = new List<(string, int, AddedToken)>();
        foreach (KeyValuePair<int, AddedToken> pair in addedById)
        {
            _idToToken[pair.Key] = pair.Value.Content;
            if (pair.Value.Special)
            {
                _specialIds.Add(pair.Key);
            }

            // With no normalizer both groups match the raw text, but Hugging Face still runs them as two
            // passes (non-normalized first), which can matter when tokens of the two groups overlap.
            (pair.Value.Normalized ? normalized : nonNormalized).Add((pair.Value.Content, pair.Key, pair.Value));
        }

        _nonNormalizedAdded = new AddedTokenMatcher(nonNormalized);
        _normalizedAdded = new AddedTokenMatcher(normalized);

        var distinct = new HashSet<string>(vocab.Keys, StringComparer.Ordinal);
        distinct.UnionWith(_addedByContent.Keys);
        VocabularySize = distinct.Count;
    }

    /// <summary>
    /// Number of distinct tokens: the model vocabulary plus added tokens that are not in it (Hugging Face's
    /// <c>get_vocab_size(with_added_tokens=True)</c>).
    /// </summary>
    public int VocabularySize { get; }

    /// <summary>Id of the unknown token, given to every word that is not in the vocabulary.</summary>
    public int UnknownId { get; }

    /// <summary>The unknown token's text (the model's <c>unk_token</c>, e.g. <c>[UNK]</c>).</summary>
    public string UnknownToken { get; }

    /// <summary>Ids of the special added tokens (those <see cref="Decode(IEnumerable{int})"/> drops).</summary>
    public IReadOnlyCollection<int> SpecialTokenIds => _specialIds;

    /// <summary>Loads a Hugging Face <c>tokenizer.json</c> file.</summary>
    /// <param name="path">Path of the <c>tokenizer.json</c> file.</param>
    /// <returns>The tokenizer.</returns>
    /// <exception cref="ArgumentException"><paramref name="path"/> is null or empty.</exception>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not valid JSON or lacks the vocabulary or the unknown token.</exception>
    /// <exception cref="NotSupportedException">The file uses a model, pre-tokenizer or other component this class does not implement.</exception>
    public static WordLevelTokenizer Create(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string fullPath = Path.GetFullPath(path);
        if (!File.Exists(fullPath))
        {
            throw new FileNotFoundException($"Tokenizer file '{fullPath}' was not found.", fullPath);
        }

        using FileStream stream = File.OpenRead(fullPath);
        return Create(stream, fullPath);
    }

    /// <summary>Loads a Hugging Face <c>tokenizer.json</c> from a stream.</summary>
    /// <param name="stream">The JSON content; read to its end and not disposed.</param>
    /// <param name="sourceName">Name of the source (e.g. a file path) used in error messages.</param>
    /// <returns>The tokenizer.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="stream"/> is null.</exception>
    /// <exception cref="InvalidDataException">The content is not valid JSON or lacks the vocabulary or the unknown token.</exception>
    /// <exception cref="NotSupportedException">The content uses a model, pre-tokenizer or other component this class does not implement.</exception>
    public static WordLevelTokenizer Create(Stream stream, string? sourceName = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        string source = string.IsNullOrEmpty(sourceName) ? "<stream>" : sourceName;

        using (JsonDocument document = UntrustedJson.ParseStream(stream, (message, e) => new InvalidDataException($"Tokenizer file '{source}': {message}", e)))
        {
            return TokenizerJson.Parse(document.RootElement, source);
        }
    }

    /// <summary>Gets the id of a token: an added token's id, else the model vocabulary's id.</summary>
    /// <param name="token">The token text, matched exactly (e.g. <c>[SOS]</c> or a word).</param>
    /// <returns>The id, or <see langword="null"/> when the token is unknown.</returns>
    public int? TokenToId(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        if (_addedByContent.TryGetValue(token, out int id) || _vocab.TryGetValue(token, out id))
        {
            return id;
        }

        return null;
    }

    /// <summary>Gets the token text of an id.</summary>
    /// <param name="id">The token id.</param>
    /// <returns>The token, or <see langword="null"/> when no token has this id.</returns>
    public string? IdToToken(int id) => _idToToken.TryGetValue(id, out string? token) ? token : null;

    /// <summary>Whether <paramref name="id"/> is a special added token (dropped by decoding).</summary>
    /// <param name="id">The token id.</param>
    /// <returns><see langword="true"/> for special tokens such as <c>[PAD]</c> or <c>[EOS]</c>.</returns>
    public bool IsSpecialToken(int id) => _specialIds.Contains(id);

    /// <inheritdoc/>
    protected override EncodeResults<EncodedToken> EncodeToTokens(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings)
    {
        ReadOnlySpan<char> span = text is null ? textSpan : text.AsSpan();
        var sink = new TokenSink(span.Length);
        int consumed = Encode(span, settings, ref sink);
        return new EncodeResults<EncodedToken> { Tokens = sink.Tokens, CharsConsumed = consumed, NormalizedText = null };
    }

    /// <inheritdoc/>
    protected override EncodeResults<int> EncodeToIds(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings)
    {
        ReadOnlySpan<char> span = text is null ? textSpan : text.AsSpan();
        var sink = new IdSink(span.Length);
        int consumed = Encode(span, settings, ref sink);
        return new EncodeResults<int> { Tokens = sink.Ids, CharsConsumed = consumed, NormalizedText = null };
    }

    /// <inheritdoc/>
    protected override int CountTokens(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings)
    {
        ReadOnlySpan<char> span = text is null ? textSpan : text.AsSpan();
        var sink = new CountSink();
        Encode(span, settings, ref sink);
        return sink.Count;
    }

    /// <summary>
    /// Decodes ids to text: special tokens are dropped and the other tokens are joined with single spaces.
    /// </summary>
    /// <param name="ids">The token ids.</param>
    /// <returns>The decoded text.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="ids"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An id is not in the vocabulary.</exception>
    public override string Decode(IEnumerable<int> ids) => Decode(ids, skipSpecialTokens: true);

    /// <summary>Decodes ids to text, joining tokens with single spaces.</summary>
    /// <param name="ids">The token ids.</param>
    /// <param name="skipSpecialTokens">Whether to drop special added tokens (Hugging Face's <c>skip_special_tokens</c>).</param>
    /// <returns>The decoded text.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="ids"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An id is not in the vocabulary.</exception>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var builder = new StringBuilder();
        bool first = true;
        foreach (int id in ids)
        {
            string token = LookupForDecode(id);
            if (skipSpecialTokens && _specialIds.Contains(id))
            {
                continue;
            }

            if (!first)
            {
                builder.Append(' ');
            }

            builder.Append(token);
            first = false;
        }

        return builder.ToString();
    }

    /// <summary>
    /// Decodes ids into <paramref name="destination"/>: special tokens are dropped and the others joined with single spaces.
    /// </summary>
    /// <param name="ids">The token ids.</param>
    /// <param name="destination">Where to write the text.</param>
    /// <param name="idsConsumed">How many ids were decoded (all of them unless the destination is too small).</param>
    /// <param name="charsWritten">How many characters were written.</param>
    /// <returns><see cref="OperationStatus.Done"/>, or <see cref="OperationStatus.DestinationTooSmall"/> when the next token does not fit.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="ids"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An id is not in the vocabulary.</exception>
    public override OperationStatus Decode(IEnumerable<int> ids, Span<char> destination, out int idsConsumed, out int charsWritten)
    {
        ArgumentNullException.ThrowIfNull(ids);
        idsConsumed = 0;
        charsWritten = 0;
        foreach (int id in ids)
        {
            string token = LookupForDecode(id);
            if (!_specialIds.Contains(id))
            {
                int separator = charsWritten > 0 ? 1 : 0;
                if (destination.Length - charsWritten < separator + token.Length)
                {
                    return OperationStatus.DestinationTooSmall;
                }

                if (separator == 1)
                {
                    destination[charsWritten++] = ' ';
                }

                token.AsSpan().CopyTo(destination[charsWritten..]);
                charsWritten += token.Length;
            }

            idsConsumed++;
        }

        return OperationStatus.Done;
    }

    private string LookupForDecode(int id)
    {
        if (_idToToken.TryGetValue(id, out string? token))
        {
            return token;
        }

        throw new ArgumentOutOfRangeException("ids", id, $"Token id {id} is not in the vocabulary of tokenizer '{_sourceName}'.");
    }

    /// <summary>Runs the encoding pipeline, feeding tokens to <paramref name="sink"/>; returns the characters consumed.</summary>
    private int Encode<TSink>(ReadOnlySpan<char> text, EncodeSettings settings, ref TSink sink)
        where TSink : struct, ITokenSink
    {
        if (settings.MaxTokenCount <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(settings), settings.MaxTokenCount, "The maximum number of tokens must be greater than zero.");
        }

        var state = new EncodeState { MaxTokens = settings.MaxTokenCount, PreTokenize = settings.ConsiderPreTokenization };

        // Pass 1: added tokens with normalized=false; pass 2 (inside OnGap): normalized=true ones in the gaps.
        _nonNormalizedAdded.Split(text, 0, text.Length, this, ref state, ref sink, secondPass: false);
        return state.Full ? state.LastEnd : text.Length;
    }

    /// <summary>Handles a piece of text that contains no added token of the current pass.</summary>
    private void OnGap<TSink>(ReadOnlySpan<char> text, int start, int end, ref EncodeState state, ref TSink sink, bool secondPass)
        where TSink : struct, ITokenSink
    {
        if (!secondPass)
        {
            _normalizedAdded.Split(text, start, end, this, ref state, ref sink, secondPass: true);
            return;
        }

        ReadOnlySpan<char> piece = text[start..end];
        if (!state.PreTokenize)
        {
            if (piece.Length > 0)
            {
                EmitWord(text, start, piece.Length, ref state, ref sink);
            }

            return;
        }

        int pos = 0;
        while (!state.Full && WhitespacePreTokenizer.Next(piece, ref pos, _whitespaceSplitOnly, out int index, out int length))
        {
            EmitWord(text, start + index, length, ref state, ref sink);
        }
    }

    private void EmitWord<TSink>(ReadOnlySpan<char> text, int index, int length, ref EncodeState state, ref TSink sink)
        where TSink : struct, ITokenSink
    {
        int id = 0;
        if (sink.NeedsIds && !_vocabBySpan.TryGetValue(text.Slice(index, length), out id))
        {
            id = UnknownId;
        }

        Emit(text, index, length, id, ref state, ref sink);
    }

    private static void Emit<TSink>(ReadOnlySpan<char> text, int index, int length, int id, ref EncodeState state, ref TSink sink)
        where TSink : struct, ITokenSink
    {
        if (state.Full)
        {
            return;
        }

        sink.Add(text, index, length, id);
        state.LastEnd = index + length;
        if (++state.Count >= state.MaxTokens)
        {
            state.Full = true;
        }
    }

    private struct EncodeState
    {
        public int MaxTokens;
        public int Count;
        public int LastEnd;
        public bool Full;
        public bool PreTokenize;
    }

    private interface ITokenSink
    {
        bool NeedsIds { get; }

        void Add(ReadOnlySpan<char> text, int index, int length, int id);
    }

    private struct TokenSink(int textLength) : ITokenSink
    {
        public List<EncodedToken> Tokens = new(Math.Min(textLength / 4 + 4, 1024));

        public readonly bool NeedsIds => true;

        public readonly void Add(ReadOnlySpan<char> text, int index, int length, int id)
            => Tokens.Add(new EncodedToken(id, text.Slice(index, length).ToString(), new Range(index, index + length)));
    }

    private struct IdSink(int textLength) : ITokenSink
    {
        public List<int> Ids = new(Math.Min(textLength / 4 + 4, 1024));

        public readonly bool NeedsIds => true;

        public readonly void Add(ReadOnlySpan<char> text, int index, int length, int id) => Ids.Add(id);
    }

    private struct CountSink : ITokenSink
    {
        public int Count;

        public readonly bool NeedsIds => false;

        public void Add(ReadOnlySpan<char> text, int index, int length, int id) => Count++;
    }

    /// <summary>One entry of <c>added_tokens</c>.</summary>
    internal sealed record AddedToken(string Content, bool SingleWord, bool LStrip, bool RStrip, bool Normalized, bool Special);

    /// <summary>
    /// Finds added tokens like tokenizers' <c>AddedVocabulary::find_matches</c>: leftmost-longest,
    /// non-overlapping exact matches, filtered by <c>single_word</c> and widened by <c>lstrip</c>/<c>rstrip</c>.
    /// </summary>
    private sealed class AddedTokenMatcher
    {
        // Candidates by first UTF-16 unit, longest first, so the first hit at a position is the longest.
        private readonly Dictionary<char, (string Content, int Id, AddedToken Token)[]> _byFirstChar;

        public AddedTokenMatcher(List<(string Content, int Id, AddedToken Token)> tokens)
        {
            _byFirstChar = tokens
                .GroupBy(t => t.Content[0])
                .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Content.Length).ThenBy(t => t.Content, StringComparer.Ordinal).ToArray());
        }

        public void Split<TSink>(ReadOnlySpan<char> text, int start, int end, WordLevelTokenizer owner, ref EncodeState state, ref TSink sink, bool secondPass)
            where TSink : struct, ITokenSink
        {
            // The "sentence" Hugging Face matches in: the whole text, or one gap left by the first pass.
            ReadOnlySpan<char> sentence = text[start..end];
            int startOffset = 0;
            int pos = 0;
            while (_byFirstChar.Count > 0 && pos < sentence.Length && !state.Full)
            {
                if (!TryMatchAt(sentence, pos, out int matchLength, out int id, out AddedToken? token))
                {
                    pos++;
                    continue;
                }

                int matchStart = pos;
                int matchStop = pos + matchLength;
                pos = matchStop; // the automaton resumes after the raw match, whatever rstrip did

                if (token.SingleWord)
                {
                    bool startOk = matchStart == 0 || !EndsWithWordChar(sentence[..matchStart]);
                    bool stopOk = matchStop == sentence.Length || !StartsWithWordChar(sentence[matchStop..]);
                    if (!startOk || !stopOk)
                    {
                        continue;
                    }
                }

                if (token.LStrip)
                {
                    matchStart = Math.Max(TrailingWhiteSpaceStart(sentence[..matchStart]), startOffset);
                }

                if (token.RStrip)
                {
                    matchStop += LeadingWhiteSpaceLength(sentence[matchStop..]);
                }

                if (startOffset < matchStart)
                {
                    owner.OnGap(text, start + startOffset, start + matchStart, ref state, ref sink, secondPass);
                }

                Emit(text, start + matchStart, matchStop - matchStart, id, ref state, ref sink);
                startOffset = matchStop;
            }

            if (startOffset < sentence.Length && !state.Full)
            {
                owner.OnGap(text, start + startOffset, end, ref state, ref sink, secondPass);
            }
        }

        private bool TryMatchAt(ReadOnlySpan<char> sentence, int pos, out int length, out int id, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out AddedToken? token)
        {
            if (_byFirstChar.TryGetValue(sentence[pos], out var candidates))
            {
                ReadOnlySpan<char> rest = sentence[pos..];
                foreach ((string content, int candidateId, AddedToken candidate) in candidates)
                {
                    if (rest.StartsWith(content, StringComparison.Ordinal))
                    {
                        length = content.Length;
                        id = candidateId;
                        token = candidate;
                        return true;
                    }
                }
            }

            length = 0;
            id = 0;
            token = null;
            return false;
        }

        private static bool EndsWithWordChar(ReadOnlySpan<char> s)
        {
            if (s.IsEmpty)
            {
                return false;
            }

            Rune.DecodeLastFromUtf16(s, out Rune rune, out _);
            return WhitespacePreTokenizer.IsWordChar(rune);
        }

        private static bool StartsWithWordChar(ReadOnlySpan<char> s)
        {
            if (s.IsEmpty)
            {
                return false;
            }

            Rune.DecodeFromUtf16(s, out Rune rune, out _);
            return WhitespacePreTokenizer.IsWordChar(rune);
        }

        private static int TrailingWhiteSpaceStart(ReadOnlySpan<char> s)
        {
            int i = s.Length;
            while (i > 0)
            {
                Rune.DecodeLastFromUtf16(s[..i], out Rune rune, out int width);
                if (!WhitespacePreTokenizer.IsWhiteSpace(rune.Value))
                {
                    break;
                }

                i -= width;
            }

            return i;
        }

        private static int LeadingWhiteSpaceLength(ReadOnlySpan<char> s)
        {
            int i = 0;
            while (i < s.Length)
            {
                Rune.DecodeFromUtf16(s[i..], out Rune rune, out int width);
                if (!WhitespacePreTokenizer.IsWhiteSpace(rune.Value))
                {
                    break;
                }

                i += width;
            }

            return i;
        }
    }

    /// <summary>Reads and validates the <c>tokenizer.json</c> layout.</summary>
    private static class TokenizerJson
    {
        public static WordLevelTokenizer Parse(JsonElement root, string source)
        {
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException($"Tokenizer file '{source}': the top-level JSON value must be an object.");
            }

            // Components that would change encoding or decoding and that this class does not implement.
            RequireNull(root, "normalizer", source);
            RequireNull(root, "post_processor", source);
            RequireNull(root, "decoder", source);
            RequireNull(root, "truncation", source);
            RequireNull(root, "padding", source);

            if (!root.TryGetProperty("model", out JsonElement model) || model.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException($"Tokenizer file '{source}': missing \"model\" object.");
            }

            string? modelType = model.TryGetProperty("type", out JsonElement typeElement) && typeElement.ValueKind == JsonValueKind.String
                ? typeElement.GetString()
                : null;
            if (modelType != "WordLevel")
            {
                throw new NotSupportedException(
                    $"Tokenizer file '{source}': model type '{modelType ?? "(none)"}' is not supported; only 'WordLevel' is.");
            }

            bool whitespaceSplitOnly = ParsePreTokenizer(root, source);
            Dictionary<string, int> vocab = ParseVocab(model, source);

            if (!model.TryGetProperty("unk_token", out JsonElement unkElement) || unkElement.ValueKind != JsonValueKind.String
                || string.IsNullOrEmpty(unkElement.GetString()))
            {
                throw new InvalidDataException($"Tokenizer file '{source}': the WordLevel model has no \"unk_token\".");
            }

            string unk = unkElement.GetString()!;
            if (!vocab.ContainsKey(unk))
            {
                // Hugging Face fails on the first unknown word in this case; fail at load time instead.
                throw new InvalidDataException($"Tokenizer file '{source}': the unknown token '{unk}' is not in the vocabulary.");
            }

            List<AddedToken> added = ParseAddedTokens(root, source);
            return new WordLevelTokenizer(vocab, unk, added, whitespaceSplitOnly, source);
        }

        private static void RequireNull(JsonElement root, string name, string source)
        {
            if (root.TryGetProperty(name, out JsonElement value) && value.ValueKind != JsonValueKind.Null)
            {
                string type = value.ValueKind == JsonValueKind.Object && value.TryGetProperty("type", out JsonElement t)
                    && t.ValueKind == JsonValueKind.String ? $" of type '{t.GetString()}'" : string.Empty;
                throw new NotSupportedException(
                    $"Tokenizer file '{source}': \"{name}\"{type} is not supported; WordLevelTokenizer requires \"{name}\": null.");
            }
        }

        /// <summary>Returns true for WhitespaceSplit-only, false when a Whitespace split is involved.</summary>
        private static bool ParsePreTokenizer(JsonElement root, string source)
        {
            if (!root.TryGetProperty("pre_tokenizer", out JsonElement pre) || pre.ValueKind == JsonValueKind.Null)
            {
                throw new NotSupportedException(
                    $"Tokenizer file '{source}': \"pre_tokenizer\" is null; only Whitespace, WhitespaceSplit or a Sequence of them is supported.");
            }

            bool hasWhitespace = false;
            bool hasSplit = false;
            Visit(pre);

            // Whitespace pieces never contain white space, so combining it with WhitespaceSplit in any order
            // equals Whitespace alone.
            return !hasWhitespace && hasSplit;

            void Visit(JsonElement element)
            {
                string? type = element.ValueKind == JsonValueKind.Object && element.TryGetProperty("type", out JsonElement t)
                    && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
                switch (type)
                {
                    case "Whitespace":
                        hasWhitespace = true;
                        break;
                    case "WhitespaceSplit":
                        hasSplit = true;
                        break;
                    case "Sequence" when element.TryGetProperty("pretokenizers", out JsonElement items) && items.ValueKind == JsonValueKind.Array:
                        foreach (JsonElement item in items.EnumerateArray())
                        {
                            Visit(item);
                        }

                        break;
                    default:
                        throw new NotSupportedException(
                            $"Tokenizer file '{source}': pre_tokenizer '{type ?? element.GetRawText()}' is not supported; only Whitespace, WhitespaceSplit or a Sequence of them is.");
                }
            }
        }

        private static Dictionary<string, int> ParseVocab(JsonElement model, string source)
        {
            if (!model.TryGetProperty("vocab", out JsonElement vocabElement) || vocabElement.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException($"Tokenizer file '{source}': the WordLevel model has no \"vocab\" object.");
            }

            var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (JsonProperty entry in vocabElement.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0)
                {
                    throw new InvalidDataException(
                        $"Tokenizer file '{source}': vocab entry '{entry.Name}' must have a non-negative integer id, not {entry.Value.GetRawText()}.");
                }

                vocab[entry.Name] = id;
            }

            if (vocab.Count == 0)
            {
                throw new InvalidDataException($"Tokenizer file '{source}': the vocabulary is empty.");
            }

            return vocab;
        }

        private static List<AddedToken> ParseAddedTokens(JsonElement root, string source)
        {
            var list = new List<AddedToken>();
            if (!root.TryGetProperty("added_tokens", out JsonElement array) || array.ValueKind == JsonValueKind.Null)
            {
                return list;
            }

            if (array.ValueKind != JsonValueKind.Array)
            {
                throw new InvalidDataException($"Tokenizer file '{source}': \"added_tokens\" must be an array.");
            }

            foreach (JsonElement item in array.EnumerateArray())
            {
                if (item.ValueKind != JsonValueKind.Object || !item.TryGetProperty("content", out JsonElement content)
                    || content.ValueKind != JsonValueKind.String)
                {
                    throw new InvalidDataException($"Tokenizer file '{source}': an added token has no \"content\" string: {item.GetRawText()}");
                }

                list.Add(new AddedToken(
                    content.GetString()!,
                    Flag(item, "single_word", false, source),
                    Flag(item, "lstrip", false, source),
                    Flag(item, "rstrip", false, source),
                    Flag(item, "normalized", true, source),
                    Flag(item, "special", false, source)));
            }

            return list;
        }

        private static bool Flag(JsonElement item, string name, bool defaultValue, string source)
        {
            if (!item.TryGetProperty(name, out JsonElement value) || value.ValueKind == JsonValueKind.Null)
            {
                return defaultValue; // Hugging Face's serde defaults
            }

            return value.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw new InvalidDataException($"Tokenizer file '{source}': added token field \"{name}\" must be a boolean."),
            };
        }
    }
}
