using System.Buffers;
using System.Text;

namespace TransformerInference.Tokenization;

/// <summary>
/// One SentencePiece model file (BPE or unigram): normalizes text as the model's normalizer does and splits it into
/// the pieces <c>sentencepiece</c> (0.1.97, the version behind Hugging Face's slow tokenizers) gives, id for id.
/// </summary>
/// <remarks>
/// <para>The segmentation follows sentencepiece's rules rather than Microsoft.ML.Tokenizers', whose tie-breaking
/// differs on runs of repeated characters and patterns. BPE (<c>bpe_model.cc</c>): every adjacent pair of symbols
/// that is a piece goes on an agenda; the pair with the highest score is merged first, among equal scores the
/// leftmost; pieces marked unused are split back into the pair they were merged from. Unigram
/// (<c>unigram_model.cc</c>, <c>EncodeOptimized</c>): Viterbi over the pieces ending at each position, scores summed
/// as sentencepiece sums them (a candidate in double precision, the best score kept in single precision), a later
/// candidate replacing the best only when strictly better; a character that no one-character piece covers is
/// unknown with the lowest score minus 10. Runs of unknown pieces become one piece, as in sentencepiece's
/// <c>Encode</c>; in a byte-fallback model each unknown piece becomes instead one <c>&lt;0xXX&gt;</c> piece per
/// UTF-8 byte (<c>PopulateSentencePieceText</c>).</para>
/// <para>The model file is read here (pieces, scores, types, trainer and normalizer options); Microsoft.ML.Tokenizers'
/// SentencePiece model is not used.</para>
/// </remarks>
internal sealed class SentencePieceSegmenter
{
    private const float UnknownPenalty = 10f; // kUnkPenalty

    private readonly float[] _scores;
    private readonly PieceType[] _types;
    private readonly Dictionary<string, int> _vocabulary;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _idLookup;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _mergeable; // sentencepiece's pieces_
    private readonly SentencePieceNormalization _normalization;
    private readonly bool _bpe;
    private readonly string[] _userDefined; // BPE: longest first, matched as one frozen symbol
    private readonly CharTrie? _trie; // unigram
    private readonly float _unknownScore;
    private readonly float _maxScore;
    private readonly (string Piece, int Id)[]? _bytePieces; // byte fallback: <0x00>..<0xFF>
    private readonly Dictionary<int, byte> _byteOfId = []; // every BYTE piece named <0xXX>

    private SentencePieceSegmenter(ModelFile model, SentencePieceNormalization normalization, string path)
    {
        Path = path;
        _normalization = normalization;
        _scores = model.Scores;
        _types = model.Types;
        _bpe = model.ModelType == 2;

        // PieceToId: control, unknown and byte pieces first, then the others; a string defined twice is an error.
        var reserved = new Dictionary<string, int>(StringComparer.Ordinal);
        var mergeable = new Dictionary<string, int>(StringComparer.Ordinal);
        int unknownId = -1;
        var control = new HashSet<string>(StringComparer.Ordinal);
        float min = float.MaxValue, max = float.Epsilon; // FLT_MAX, FLT_MIN
        for (int i = 0; i < model.Pieces.Length; i++)
        {
            string piece = model.Pieces[i];
            PieceType type = model.Types[i];
            bool normal = type is PieceType.Normal or PieceType.UserDefined or PieceType.Unused;
            if (piece.Length == 0 || !(normal ? mergeable : reserved).TryAdd(piece, i))
            {
                throw new InvalidDataException(piece.Length == 0
                    ? $"SentencePiece model '{path}': piece {i} is empty."
                    : $"SentencePiece model '{path}': piece '{piece}' is defined twice.");
            }

            switch (type)
            {
                case PieceType.Unknown when unknownId >= 0:
                    throw new InvalidDataException($"SentencePiece model '{path}': more than one unknown piece.");
                case PieceType.Unknown:
                    unknownId = i;
                    break;
                case PieceType.Control:
                    control.Add(piece);
                    break;
                case PieceType.Byte when piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>'
                    && byte.TryParse(piece.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, System.Globalization.CultureInfo.InvariantCulture, out byte value):
                    _byteOfId[i] = value;
                    break;
                case PieceType.Normal:
                    min = Math.Min(min, model.Scores[i]);
                    max = Math.Max(max, model.Scores[i]);
                    break;
            }
        }

        if (unknownId < 0)
        {
            throw new InvalidDataException($"SentencePiece model '{path}' has no unknown piece.");
        }

        UnknownId = unknownId;
        ControlPieces = control;
        _unknownScore = min - UnknownPenalty;
        _maxScore = max;
        _vocabulary = new Dictionary<string, int>(reserved, StringComparer.Ordinal);
        foreach ((string piece, int id) in mergeable)
        {
            _vocabulary.TryAdd(piece, id);
        }

        _idLookup = _vocabulary.GetAlternateLookup<ReadOnlySpan<char>>();
        _mergeable = mergeable.GetAlternateLookup<ReadOnlySpan<char>>();
        _userDefined = [.. mergeable.Where(p => _types[p.Value] == PieceType.UserDefined).Select(p => p.Key).OrderByDescending(p => p.Length)];
        if (!_bpe)
        {
            _trie = new CharTrie(mergeable, id => _types[id] != PieceType.Unused);
        }

        if (model.ByteFallback)
        {
            _bytePieces = new (string, int)[256];
            for (int b = 0; b < 256; b++)
            {
                string piece = BytePiece(b);
                if (!reserved.TryGetValue(piece, out int id) || _types[id] != PieceType.Byte)
                {
                    throw new InvalidDataException($"SentencePiece model '{path}' uses byte fallback but has no byte piece '{piece}'.");
                }

                _bytePieces[b] = (piece, id);
            }
        }
    }

    private enum PieceType : byte
    {
        Normal = 1,
        Unknown = 2,
        Control = 3,
        UserDefined = 4,
        Unused = 5,
        Byte = 6,
    }

    public string Path { get; }

    /// <summary>Piece → SentencePiece id, every piece of the model.</summary>
    public IReadOnlyDictionary<string, int> Vocabulary => _vocabulary;

    public int UnknownId { get; }

    /// <summary>Number of pieces in the model.</summary>
    public int Count => _scores.Length;

    /// <summary>Pieces that <c>sentencepiece</c> decodes to nothing (control pieces such as <c>&lt;s&gt;</c>, <c>&lt;/s&gt;</c>).</summary>
    public IReadOnlySet<string> ControlPieces { get; }

    /// <summary>Reads a SentencePiece model file.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not a valid SentencePiece model.</exception>
    /// <exception cref="NotSupportedException">The model uses an option this class does not implement.</exception>
    public static SentencePieceSegmenter Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"SentencePiece model '{path}' was not found.", path);
        }

        byte[] bytes = File.ReadAllBytes(path);
        ModelFile model = ModelFile.Read(bytes, path);
        if (model.ModelType is not (1 or 2))
        {
            string name = model.ModelType switch { 3 => "WORD", 4 => "CHAR", _ => model.ModelType.ToString(System.Globalization.CultureInfo.InvariantCulture) };
            throw new NotSupportedException($"SentencePiece model '{path}' is of type {name}; only UNIGRAM and BPE models are supported.");
        }

        if (model.TreatWhitespaceAsSuffix)
        {
            throw new NotSupportedException($"SentencePiece model '{path}' treats white space as a suffix, which is not supported.");
        }

        IEnumerable<string> userDefined = model.Pieces.Where((_, i) => model.Types[i] == PieceType.UserDefined);
        return new SentencePieceSegmenter(model, SentencePieceNormalization.Read(bytes, path, userDefined), path);
    }

    /// <summary>Normalizes <paramref name="text"/> and splits it into pieces.</summary>
    /// <param name="text">Raw text.</param>
    /// <param name="normalized">The normalized text (<c>▁</c> for spaces) that piece offsets refer to.</param>
    /// <returns>The pieces in order; <c>Unknown</c> marks pieces the model does not hold.</returns>
    public List<Piece> Split(string text, out string normalized)
    {
        normalized = _normalization.Normalize(text);
        return Segment(normalized);
    }

    /// <summary>Splits already normalized text into pieces, as sentencepiece's model <c>Encode</c> and the merging
    /// of unknown runs do.</summary>
    public List<Piece> Segment(string normalized)
    {
        var pieces = new List<Piece>();
        if (normalized.Length == 0)
        {
            return pieces;
        }

        if (_bpe)
        {
            EncodeBpe(normalized, pieces);
        }
        else
        {
            EncodeUnigram(normalized, pieces);
        }

        return pieces;
    }

    /// <summary>Whether the model encodes unknown characters as byte pieces (<c>byte_fallback</c>).</summary>
    public bool ByteFallback => _bytePieces is not null;

    /// <summary>Whether <paramref name="id"/> is a byte piece (<c>&lt;0xXX&gt;</c>), and its byte.</summary>
    public bool IsByte(int id, out byte value) => _byteOfId.TryGetValue(id, out value);

    /// <summary>sentencepiece's <c>ByteToPiece</c>: <c>&lt;0x41&gt;</c>.</summary>
    private static string BytePiece(int b) => $"<0x{b:X2}>";

    /// <summary>Adds a piece, joining it to the previous one when both are unknown; with byte fallback an unknown
    /// piece becomes one byte piece per UTF-8 byte (sentencepiece's <c>PopulateSentencePieceText</c>), the last one
    /// holding the characters' span and the others empty at its start.</summary>
    private void Add(List<Piece> pieces, string text, int start, int length, int id)
    {
        bool unknown = _types[id] == PieceType.Unknown;
        if (unknown && _bytePieces is not null)
        {
            byte[] utf8 = ArrayPool<byte>.Shared.Rent(3 * length);
            int count = Encoding.UTF8.GetBytes(text.AsSpan(start, length), utf8);
            for (int i = 0; i < count; i++)
            {
                (string piece, int byteId) = _bytePieces[utf8[i]];
                pieces.Add(new Piece(piece, start, i == count - 1 ? length : 0, false, byteId));
            }

            ArrayPool<byte>.Shared.Return(utf8);
            return;
        }

        if (unknown && pieces.Count > 0 && pieces[^1].Unknown)
        {
            Piece previous = pieces[^1];
            int end = start + length;
            pieces[^1] = previous with { Text = text[previous.Start..end], Length = end - previous.Start };
            return;
        }

        pieces.Add(new Piece(text.Substring(start, length), start, length, unknown, id));
    }

    private int PieceToId(ReadOnlySpan<char> piece) => _idLookup.TryGetValue(piece, out int id) ? id : UnknownId;

    private static int CharLength(string text, int pos)
        => char.IsHighSurrogate(text[pos]) && pos + 1 < text.Length && char.IsLowSurrogate(text[pos + 1]) ? 2 : 1;

    private void EncodeUnigram(string text, List<Piece> pieces)
    {
        int n = text.Length;
        float[] bestScore = ArrayPool<float>.Shared.Rent(n + 1);
        int[] bestStart = ArrayPool<int>.Shared.Rent(n + 1);
        int[] bestId = ArrayPool<int>.Shared.Rent(n + 1);
        try
        {
            bestScore[0] = 0f;
            bestStart.AsSpan(0, n + 1).Fill(-1);
            CharTrie trie = _trie!;
            for (int start = 0; start < n;)
            {
                int charLength = CharLength(text, start);
                float tillHere = bestScore[start];
                bool singleCharacter = false;
                int node = 0;
                for (int k = start; k < n; k++)
                {
                    node = trie.Next(node, text[k]);
                    if (node < 0)
                    {
                        break;
                    }

                    int id = trie.Value(node); // -1 also for unused pieces, which unigram never emits
                    if (id < 0)
                    {
                        continue;
                    }

                    int end = k + 1;
                    int length = end - start;

                    // sentencepiece: `score` is a double (user-defined bonus `length * max_score - 0.1`, length in
                    // UTF-8 bytes) and so is the candidate; the best score is stored as a float.
                    double score = _userDefined.Length > 0 && _types[id] == PieceType.UserDefined
                        ? (float)Encoding.UTF8.GetByteCount(text.AsSpan(start, length)) * _maxScore - 0.1
                        : _scores[id];
                    double candidate = score + tillHere;
                    if (bestStart[end] == -1 || candidate > bestScore[end])
                    {
                        bestScore[end] = (float)candidate;
                        bestStart[end] = start;
                        bestId[end] = id;
                    }

                    if (length == charLength)
                    {
                        singleCharacter = true;
                    }
                }

                if (!singleCharacter)
                {
                    int end = start + charLength;
                    float candidate = _unknownScore + tillHere; // float arithmetic, as sentencepiece's unk candidate
                    if (bestStart[end] == -1 || candidate > bestScore[end])
                    {
                        bestScore[end] = candidate;
                        bestStart[end] = start;
                        bestId[end] = UnknownId;
                    }
                }

                start += charLength;
            }

            int count = 0;
            for (int end = n; end > 0; end = bestStart[end])
            {
                count++;
            }

            int[] ends = ArrayPool<int>.Shared.Rent(count);
            try
            {
                int i = count;
                for (int end = n; end > 0; end = bestStart[end])
                {
                    ends[--i] = end;
                }

                for (i = 0; i < count; i++)
                {
                    int end = ends[i];
                    int start = bestStart[end];
                    Add(pieces, text, start, end - start, bestId[end]);
                }
            }
            finally
            {
                ArrayPool<int>.Shared.Return(ends);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(bestScore);
            ArrayPool<int>.Shared.Return(bestStart);
            ArrayPool<int>.Shared.Return(bestId);
        }
    }

    private void EncodeBpe(string text, List<Piece> pieces)
    {
        int n = text.Length;
        int[] buffer = ArrayPool<int>.Shared.Rent(4 * n);
        var agenda = new Agenda(n);
        Dictionary<string, (int Left, int Right)>? unusedSplits = null;
        try
        {
            Span<int> start = buffer.AsSpan(0, n);
            Span<int> length = buffer.AsSpan(n, n);
            Span<int> prev = buffer.AsSpan(2 * n, n);
            Span<int> next = buffer.AsSpan(3 * n, n);
            bool[]? frozen = _userDefined.Length > 0 ? new bool[n] : null;

            // Symbols: characters, or a whole user-defined piece (never merged).
            int count = 0;
            for (int pos = 0; pos < n; count++)
            {
                int size = CharLength(text, pos);
                if (frozen is not null)
                {
                    foreach (string symbol in _userDefined)
                    {
                        if (text.AsSpan(pos).StartsWith(symbol, StringComparison.Ordinal))
                        {
                            size = symbol.Length;
                            frozen[count] = true;
                            break;
                        }
                    }
                }

                start[count] = pos;
                length[count] = size;
                prev[count] = count - 1;
                pos += size;
                next[count] = pos < n ? count + 1 : -1;
            }

            for (int i = 1; i < count; i++)
            {
                MaybeAdd(i - 1, i, start, length);
            }

            while (agenda.TryPop(out Agenda.Pair top))
            {
                int left = top.Left, right = top.Right;
                if (length[left] == 0 || length[right] == 0 || length[left] + length[right] != top.Size)
                {
                    continue; // stale: one side has merged since
                }

                length[left] += length[right];
                next[left] = next[right];
                if (next[right] >= 0)
                {
                    prev[next[right]] = left;
                }

                length[right] = 0;
                MaybeAdd(prev[left], left, start, length);
                MaybeAdd(left, next[left], start, length);
            }

            for (int index = 0; index != -1; index = next[index])
            {
                Resegment(start[index], length[index]);
            }

            void MaybeAdd(int left, int right, Span<int> start, Span<int> length)
            {
                if (left == -1 || right == -1 || (frozen is not null && (frozen[left] || frozen[right])))
                {
                    return;
                }

                ReadOnlySpan<char> piece = text.AsSpan(start[left], length[left] + length[right]);
                if (!_mergeable.TryGetValue(piece, out int id))
                {
                    return;
                }

                agenda.Push(new Agenda.Pair(_scores[id], left, right, piece.Length));
                if (_types[id] == PieceType.Unused)
                {
                    // The split the merged string came from; a later push of the same string overwrites it.
                    unusedSplits ??= new Dictionary<string, (int, int)>(StringComparer.Ordinal);
                    unusedSplits[piece.ToString()] = (length[left], length[right]);
                }
            }

            void Resegment(int pos, int size)
            {
                ReadOnlySpan<char> piece = text.AsSpan(pos, size);
                int id = PieceToId(piece);
                if (_types[id] == PieceType.Unused && unusedSplits is not null
                    && unusedSplits.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(piece, out (int Left, int Right) split))
                {
                    Resegment(pos, split.Left);
                    Resegment(pos + split.Left, split.Right);
                    return;
                }

                Add(pieces, text, pos, size, id);
            }
        }
        finally
        {
            ArrayPool<int>.Shared.Return(buffer);
            agenda.Dispose();
        }
    }

    /// <summary>A piece of normalized text.</summary>
    /// <param name="Text">The piece (for a run of unknown characters, the characters).</param>
    /// <param name="Start">Start in the normalized text.</param>
    /// <param name="Length">Length in the normalized text.</param>
    /// <param name="Unknown">Whether the piece is unknown to the model.</param>
    /// <param name="Id">The SentencePiece id (the unknown id for unknown pieces).</param>
    internal readonly record struct Piece(string Text, int Start, int Length, bool Unknown, int Id)
    {
        public int End => Start + Length;
    }

    /// <summary>sentencepiece's BPE agenda: a max-heap of symbol pairs by score, then leftmost first.</summary>
    private struct Agenda(int capacity) : IDisposable
    {
        private Pair[] _heap = ArrayPool<Pair>.Shared.Rent(Math.Max(capacity, 4));
        private int _count;

        public void Push(Pair pair)
        {
            if (_count == _heap.Length)
            {
                Pair[] larger = ArrayPool<Pair>.Shared.Rent(_heap.Length * 2);
                _heap.AsSpan(0, _count).CopyTo(larger);
                ArrayPool<Pair>.Shared.Return(_heap);
                _heap = larger;
            }

            int i = _count++;
            while (i > 0)
            {
                int parent = (i - 1) >> 1;
                if (!Before(pair, _heap[parent]))
                {
                    break;
                }

                _heap[i] = _heap[parent];
                i = parent;
            }

            _heap[i] = pair;
        }

        public bool TryPop(out Pair top)
        {
            if (_count == 0)
            {
                top = default;
                return false;
            }

            top = _heap[0];
            Pair last = _heap[--_count];
            int i = 0;
            while (true)
            {
                int child = 2 * i + 1;
                if (child >= _count)
                {
                    break;
                }

                if (child + 1 < _count && Before(_heap[child + 1], _heap[child]))
                {
                    child++;
                }

                if (!Before(_heap[child], last))
                {
                    break;
                }

                _heap[i] = _heap[child];
                i = child;
            }

            if (_count > 0)
            {
                _heap[i] = last;
            }

            return true;
        }

        public void Dispose()
        {
            ArrayPool<Pair>.Shared.Return(_heap);
            _heap = [];
        }

        private static bool Before(Pair a, Pair b) => a.Score > b.Score || (a.Score == b.Score && a.Left < b.Left);

        public readonly record struct Pair(float Score, int Left, int Right, int Size);
    }

    /// <summary>
    /// A trie of pieces over UTF-16 characters, walked one character at a time: the root's children in a direct
    /// table, the other edges in an open-addressing hash table keyed by (node, character).
    /// </summary>
    private sealed class CharTrie
    {
        private readonly int[] _root = new int[char.MaxValue + 1]; // character -> child of the root, 0 = none
        private readonly long[] _keys; // (node << 16 | character) + 1, 0 = empty slot
        private readonly int[] _children;
        private readonly int _mask;
        private readonly int[] _values; // node -> piece id, or -1

        /// <param name="pieces">The pieces and their ids.</param>
        /// <param name="emitted">Whether a piece is a value of the trie; the others only lead to longer pieces.</param>
        public CharTrie(Dictionary<string, int> pieces, Func<int, bool> emitted)
        {
            var edges = new Dictionary<long, int>();
            var values = new List<int> { -1 };
            foreach ((string piece, int id) in pieces)
            {
                int node = 0;
                foreach (char c in piece)
                {
                    long key = ((long)node << 16) | c;
                    if (!edges.TryGetValue(key, out int child))
                    {
                        child = values.Count;
                        values.Add(-1);
                        edges.Add(key, child);
                    }

                    node = child;
                }

                values[node] = emitted(id) ? id : -1;
            }

            _values = [.. values];
            int capacity = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Max(16, edges.Count * 2));
            _keys = new long[capacity];
            _children = new int[capacity];
            _mask = capacity - 1;
            foreach ((long key, int child) in edges)
            {
                if (key >> 16 == 0)
                {
                    _root[(int)(key & 0xFFFF)] = child;
                    continue;
                }

                int slot = Slot(key);
                while (_keys[slot] != 0)
                {
                    slot = (slot + 1) & _mask;
                }

                _keys[slot] = key + 1;
                _children[slot] = child;
            }
        }

        /// <summary>The child of <paramref name="node"/> by <paramref name="c"/>, or -1.</summary>
        public int Next(int node, char c)
        {
            if (node == 0)
            {
                int child = _root[c];
                return child == 0 ? -1 : child;
            }

            long key = ((long)node << 16) | c;
            for (int slot = Slot(key); ; slot = (slot + 1) & _mask)
            {
                long stored = _keys[slot];
                if (stored == key + 1)
                {
                    return _children[slot];
                }

                if (stored == 0)
                {
                    return -1;
                }
            }
        }

        /// <summary>The piece id ending at <paramref name="node"/>, or -1.</summary>
        public int Value(int node) => _values[node];

        private int Slot(long key) => (int)((ulong)(key * unchecked((long)0x9E3779B97F4A7C15)) >> 40) & _mask;
    }

    /// <summary>The parts of a serialized <c>ModelProto</c> the segmenter uses.</summary>
    private sealed record ModelFile(string[] Pieces, float[] Scores, PieceType[] Types, int ModelType, bool ByteFallback, bool TreatWhitespaceAsSuffix)
    {
        public static ModelFile Read(byte[] bytes, string path)
        {
            var pieces = new List<string>();
            var scores = new List<float>();
            var types = new List<PieceType>();
            int modelType = 1; // UNIGRAM
            bool byteFallback = false, suffix = false;
            try
            {
                var reader = new ProtoReader(bytes);
                while (reader.Next(out int field, out int wireType))
                {
                    if (field == 1 && wireType == 2)
                    {
                        var piece = new ProtoReader(reader.Bytes());
                        string text = string.Empty;
                        float score = 0f;
                        int type = 1;
                        while (piece.Next(out int f, out int w))
                        {
                            switch (f, w)
                            {
                                case (1, 2): text = Encoding.UTF8.GetString(piece.Bytes()); break;
                                case (2, 5): score = piece.Float32(); break;
                                case (3, 0): type = (int)piece.Varint(); break;
                                default: piece.Skip(w); break;
                            }
                        }

                        if (type is < 1 or > 6)
                        {
                            throw new InvalidDataException($"piece {pieces.Count} ('{text}') has unknown type {type}");
                        }

                        pieces.Add(text);
                        scores.Add(score);
                        types.Add((PieceType)type);
                    }
                    else if (field == 2 && wireType == 2)
                    {
                        var trainer = new ProtoReader(reader.Bytes());
                        while (trainer.Next(out int f, out int w))
                        {
                            switch (f, w)
                            {
                                case (3, 0): modelType = (int)trainer.Varint(); break;
                                case (24, 0): suffix = trainer.Varint() != 0; break;
                                case (35, 0): byteFallback = trainer.Varint() != 0; break;
                                default: trainer.Skip(w); break;
                            }
                        }
                    }
                    else
                    {
                        reader.Skip(wireType);
                    }
                }
            }
            catch (Exception e) when (e is InvalidDataException or ArgumentOutOfRangeException or IndexOutOfRangeException or OverflowException)
            {
                throw new InvalidDataException($"SentencePiece model '{path}' could not be read: {e.Message}", e);
            }

            if (pieces.Count == 0)
            {
                throw new InvalidDataException($"SentencePiece model '{path}' holds no pieces.");
            }

            return new ModelFile([.. pieces], [.. scores], [.. types], modelType, byteFallback, suffix);
        }
    }
}
