using System.Buffers.Binary;
using System.Text;

namespace TransformerInference.Tokenization;

/// <summary>
/// The normalizer of a SentencePiece model (<c>normalizer_spec</c>): the precompiled character map (NFKC for
/// <c>nmt_nfkc</c>), removal of leading, trailing and repeated white space, the dummy <c>▁</c> prefix and the
/// escaping of spaces as <c>▁</c>, done as <c>sentencepiece</c>'s <c>Normalizer::Normalize</c> does it.
/// </summary>
/// <remarks>
/// Microsoft.ML.Tokenizers 2.0.1 applies the character map for Unigram models but not for BPE ones (its BPE
/// path leaves full-width letters, ligatures, tabs and newlines as they are), so this class normalizes for both
/// and the segmenter is called with <c>considerNormalization: false</c>.
/// </remarks>
internal sealed class SentencePieceNormalization
{
    private static readonly byte[] SpaceSymbol = Encoding.UTF8.GetBytes("\u2581");

    private readonly uint[] _trie;
    private readonly byte[] _normalized;
    private readonly bool _addDummyPrefix;
    private readonly bool _removeExtraWhitespaces;
    private readonly bool _escapeWhitespaces;

    private SentencePieceNormalization(uint[] trie, byte[] normalized, bool addDummyPrefix, bool removeExtraWhitespaces, bool escapeWhitespaces)
    {
        _trie = trie;
        _normalized = normalized;
        _addDummyPrefix = addDummyPrefix;
        _removeExtraWhitespaces = removeExtraWhitespaces;
        _escapeWhitespaces = escapeWhitespaces;
    }

    /// <summary>The <c>normalizer_spec.name</c> (e.g. <c>nmt_nfkc</c>), or an empty string.</summary>
    public string Name { get; private init; } = string.Empty;

    /// <summary>The model's user-defined pieces as UTF-8, longest first: sentencepiece's normalizer copies them as they
    /// are, without the character map.</summary>
    private byte[][] UserDefined { get; init; } = [];

    /// <summary>Reads the <c>normalizer_spec</c> of a serialized <c>ModelProto</c>.</summary>
    /// <param name="model">The model file.</param>
    /// <param name="source">The file name, for messages.</param>
    /// <param name="userDefined">The model's user-defined pieces, which normalization leaves as they are.</param>
    /// <exception cref="InvalidDataException">The bytes are not a valid model file.</exception>
    public static SentencePieceNormalization Read(byte[] model, string source, IEnumerable<string>? userDefined = null)
    {
        try
        {
            ReadOnlySpan<byte> spec = default;
            bool found = false;
            var reader = new ProtoReader(model);
            while (reader.Next(out int field, out int wireType))
            {
                if (field == 3 && wireType == 2)
                {
                    spec = reader.Bytes();
                    found = true;
                }
                else
                {
                    reader.Skip(wireType);
                }
            }

            string name = string.Empty;
            ReadOnlySpan<byte> charsMap = default;
            bool addDummyPrefix = true, removeExtra = true, escape = true;
            if (found)
            {
                var specReader = new ProtoReader(spec);
                while (specReader.Next(out int field, out int wireType))
                {
                    switch (field, wireType)
                    {
                        case (1, 2): name = Encoding.UTF8.GetString(specReader.Bytes()); break;
                        case (2, 2): charsMap = specReader.Bytes(); break;
                        case (3, 0): addDummyPrefix = specReader.Varint() != 0; break;
                        case (4, 0): removeExtra = specReader.Varint() != 0; break;
                        case (5, 0): escape = specReader.Varint() != 0; break;
                        default: specReader.Skip(wireType); break;
                    }
                }
            }

            uint[] trie = [];
            byte[] normalized = [];
            if (!charsMap.IsEmpty)
            {
                int trieBytes = checked((int)BinaryPrimitives.ReadUInt32LittleEndian(charsMap));
                if (trieBytes % 4 != 0 || trieBytes > charsMap.Length - 4)
                {
                    throw new InvalidDataException("bad precompiled_charsmap size");
                }

                trie = new uint[trieBytes / 4];
                for (int i = 0; i < trie.Length; i++)
                {
                    trie[i] = BinaryPrimitives.ReadUInt32LittleEndian(charsMap.Slice(4 + 4 * i));
                }

                normalized = charsMap[(4 + trieBytes)..].ToArray();
            }

            return new SentencePieceNormalization(trie, normalized, addDummyPrefix, removeExtra, escape)
            {
                Name = name,
                UserDefined = [.. (userDefined ?? []).Select(Encoding.UTF8.GetBytes).OrderByDescending(b => b.Length)],
            };
        }
        catch (Exception e) when (e is InvalidDataException or ArgumentOutOfRangeException or IndexOutOfRangeException or OverflowException)
        {
            throw new InvalidDataException($"SentencePiece model '{source}' could not be read: {e.Message}", e);
        }
    }

    /// <summary>Normalizes <paramref name="text"/>; the result uses <c>▁</c> for spaces and is empty for blank text.</summary>
    public string Normalize(string text)
    {
        if (text.Length == 0)
        {
            return string.Empty;
        }

        byte[] input = Encoding.UTF8.GetBytes(text);
        int pos = 0;
        if (_removeExtraWhitespaces)
        {
            while (pos < input.Length)
            {
                ReadOnlySpan<byte> piece = NormalizePrefix(input, pos, out int consumed);
                if (piece.Length != 1 || piece[0] != (byte)' ')
                {
                    break;
                }

                pos += consumed;
            }
        }

        if (pos == input.Length)
        {
            return string.Empty;
        }

        var output = new List<byte>(input.Length + 16);
        if (_addDummyPrefix)
        {
            AppendSpace(output);
        }

        bool isPrevSpace = _removeExtraWhitespaces;
        while (pos < input.Length)
        {
            ReadOnlySpan<byte> piece = NormalizePrefix(input, pos, out int consumed);
            if (isPrevSpace)
            {
                while (!piece.IsEmpty && piece[0] == (byte)' ')
                {
                    piece = piece[1..];
                }
            }

            if (!piece.IsEmpty)
            {
                foreach (byte b in piece)
                {
                    if (b == (byte)' ')
                    {
                        AppendSpace(output);
                    }
                    else
                    {
                        output.Add(b);
                    }
                }

                isPrevSpace = piece[^1] == (byte)' ';
            }

            pos += consumed;
            if (!_removeExtraWhitespaces)
            {
                isPrevSpace = false;
            }
        }

        if (_removeExtraWhitespaces)
        {
            ReadOnlySpan<byte> space = _escapeWhitespaces ? SpaceSymbol : " "u8;
            while (output.Count >= space.Length && EndsWith(output, space))
            {
                output.RemoveRange(output.Count - space.Length, space.Length);
            }
        }

        return Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(output));
    }

    private void AppendSpace(List<byte> output)
    {
        if (_escapeWhitespaces)
        {
            output.AddRange(SpaceSymbol);
        }
        else
        {
            output.Add((byte)' ');
        }
    }

    private static bool EndsWith(List<byte> output, ReadOnlySpan<byte> suffix)
        => System.Runtime.InteropServices.CollectionsMarshal.AsSpan(output)[^suffix.Length..].SequenceEqual(suffix);

    /// <summary>The replacement of the longest character-map entry at <paramref name="pos"/>, or the UTF-8 character there.</summary>
    private ReadOnlySpan<byte> NormalizePrefix(byte[] input, int pos, out int consumed)
    {
        foreach (byte[] symbol in UserDefined)
        {
            if (input.AsSpan(pos).StartsWith(symbol))
            {
                consumed = symbol.Length;
                return symbol;
            }
        }

        int bestLength = 0;
        int bestValue = 0;
        if (_trie.Length > 0)
        {
            // darts-clone double-array common-prefix search, as sentencepiece runs it over the UTF-8 bytes.
            uint node = Offset(_trie[0]);
            for (int i = pos; i < input.Length; i++)
            {
                byte c = input[i];
                node ^= c;
                if (node >= (uint)_trie.Length)
                {
                    break;
                }

                uint unit = _trie[node];
                if ((unit & 0x800000FFu) != c)
                {
                    break;
                }

                node ^= Offset(unit);
                if (((unit >> 8) & 1) == 1 && node < (uint)_trie.Length)
                {
                    bestLength = i - pos + 1;
                    bestValue = (int)(_trie[node] & 0x7FFFFFFFu);
                }
            }
        }

        if (bestLength > 0 && bestValue < _normalized.Length)
        {
            consumed = bestLength;
            ReadOnlySpan<byte> rest = _normalized.AsSpan(bestValue);
            int end = rest.IndexOf((byte)0);
            return end < 0 ? rest : rest[..end];
        }

        consumed = Utf8Length(input[pos]);
        consumed = Math.Min(consumed, input.Length - pos);
        return input.AsSpan(pos, consumed);

        static uint Offset(uint unit) => (unit >> 10) << (int)((unit & (1u << 9)) >> 6);
    }

    private static int Utf8Length(byte lead) => lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}
