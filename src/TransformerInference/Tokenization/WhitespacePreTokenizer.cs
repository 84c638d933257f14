using System.Globalization;
using System.Text;

namespace TransformerInference.Tokenization;

/// <summary>
/// Hugging Face's <c>Whitespace</c> and <c>WhitespaceSplit</c> pre-tokenizers, reproduced exactly.
/// </summary>
/// <remarks>
/// <c>Whitespace</c> keeps the matches of <c>\w+|[^\w\s]+</c> evaluated by Rust's <c>regex</c> crate, whose
/// Unicode classes differ from .NET's: Rust <c>\w</c> is Alphabetic + all marks (Mn, Mc, Me) + Nd + Pc +
/// Join_Control, so Devanagari vowel signs (Mc, e.g. U+093E) and circled letters (So, but Alphabetic) are word
/// characters, whereas .NET <c>\w</c> splits words at them. Rust <c>\s</c> is the White_Space property.
/// Classification works on <see cref="Rune"/>s so astral-plane characters are handled as one character; an
/// unpaired surrogate is classified as U+FFFD (what it becomes when the text is converted to UTF-8).
/// </remarks>
internal static class WhitespacePreTokenizer
{
    /// <summary>Character class of one code point for the <c>\w+|[^\w\s]+</c> split.</summary>
    internal enum CharClass : byte
    {
        Space,
        Word,
        Other,
    }

    // Unicode White_Space property (PropList.txt, unchanged since Unicode 6.3; identical in 15.1 and 16.0).
    // Inclusive ranges, sorted.
    private static readonly (int First, int Last)[] WhiteSpaceRanges =
    [
        (0x0009, 0x000D), (0x0020, 0x0020), (0x0085, 0x0085), (0x00A0, 0x00A0), (0x1680, 0x1680),
        (0x2000, 0x200A), (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000),
    ];

    // Alphabetic code points that are not covered by the general categories L*, Nl, M* (i.e. the
    // Other_Alphabetic members whose category is So). Derived from DerivedCoreProperties.txt
    // (Alphabetic) minus those categories (computed from Unicode 14 data). The complete classification, with .NET's
    // Unicode 16 categories, was checked for every code point against Hugging Face tokenizers 0.22.2 (Rust
    // regex-syntax 0.8.6, Unicode 16.0) by HuggingFaceOracleTests. Inclusive ranges, sorted.
    private static readonly (int First, int Last)[] AlphabeticSymbolRanges =
    [
        (0x24B6, 0x24E9), // CIRCLED LATIN CAPITAL LETTER A .. CIRCLED LATIN SMALL LETTER Z
        (0x1F130, 0x1F149), // SQUARED LATIN CAPITAL LETTER A..Z
        (0x1F150, 0x1F169), // NEGATIVE CIRCLED LATIN CAPITAL LETTER A..Z
        (0x1F170, 0x1F189), // NEGATIVE SQUARED LATIN CAPITAL LETTER A..Z
    ];

    /// <summary>Splits <paramref name="text"/> like Hugging Face's <c>Whitespace</c> pre-tokenizer.</summary>
    /// <returns>The pre-tokens as (index, length) pairs in UTF-16 code units of <paramref name="text"/>.</returns>
    internal static List<(int Index, int Length)> Split(string text) => Split(text.AsSpan(), whitespaceSplitOnly: false);

    /// <summary>
    /// Splits <paramref name="text"/> like <c>Whitespace</c> (<paramref name="whitespaceSplitOnly"/> false) or
    /// <c>WhitespaceSplit</c> (true: only White_Space separates pre-tokens).
    /// </summary>
    internal static List<(int Index, int Length)> Split(ReadOnlySpan<char> text, bool whitespaceSplitOnly)
    {
        var result = new List<(int Index, int Length)>();
        int pos = 0;
        while (Next(text, ref pos, whitespaceSplitOnly, out int index, out int length))
        {
            result.Add((index, length));
        }

        return result;
    }

    /// <summary>
    /// Finds the next pre-token at or after <paramref name="position"/> (allocation-free form of <see cref="Split(string)"/>).
    /// </summary>
    /// <returns><see langword="false"/> when no pre-token is left.</returns>
    internal static bool Next(ReadOnlySpan<char> text, ref int position, bool whitespaceSplitOnly, out int index, out int length)
    {
        int pos = position;

        // Skip separators.
        CharClass cls = CharClass.Space;
        int width = 0;
        while (pos < text.Length)
        {
            cls = Classify(text, pos, out width);
            if (cls != CharClass.Space)
            {
                break;
            }

            pos += width;
        }

        if (pos >= text.Length)
        {
            position = text.Length;
            index = 0;
            length = 0;
            return false;
        }

        index = pos;
        pos += width;

        // A pre-token is a maximal run of one class (Word or Other); for WhitespaceSplit, of both.
        while (pos < text.Length)
        {
            CharClass next = Classify(text, pos, out width);
            if (next == CharClass.Space || (!whitespaceSplitOnly && next != cls))
            {
                break;
            }

            pos += width;
        }

        length = pos - index;
        position = pos;
        return true;
    }

    /// <summary>Classifies the code point starting at <paramref name="index"/>; <paramref name="width"/> is its UTF-16 length.</summary>
    internal static CharClass Classify(ReadOnlySpan<char> text, int index, out int width)
    {
        char c = text[index];
        if (c < 0x80)
        {
            width = 1;
            return ClassifyAscii(c);
        }

        // An unpaired surrogate decodes to U+FFFD with width 1, matching UTF-8 conversion.
        Rune.DecodeFromUtf16(text[index..], out Rune rune, out width);
        return Classify(rune);
    }

    /// <summary>Classifies one code point.</summary>
    internal static CharClass Classify(Rune rune)
    {
        if (rune.IsAscii)
        {
            return ClassifyAscii((char)rune.Value);
        }

        if (IsWhiteSpace(rune.Value))
        {
            return CharClass.Space;
        }

        return IsWordChar(rune) ? CharClass.Word : CharClass.Other;
    }

    /// <summary>Rust regex <c>\w</c>: Alphabetic, marks, decimal digits, connector punctuation, Join_Control.</summary>
    internal static bool IsWordChar(Rune rune)
    {
        int v = rune.Value;
        if (v < 0x80)
        {
            return ClassifyAscii((char)v) == CharClass.Word;
        }

        if (v is 0x200C or 0x200D)
        {
            return true; // Join_Control (ZWNJ, ZWJ); their category is Cf.
        }

        switch (Rune.GetUnicodeCategory(rune))
        {
            case UnicodeCategory.UppercaseLetter:
            case UnicodeCategory.LowercaseLetter:
            case UnicodeCategory.TitlecaseLetter:
            case UnicodeCategory.ModifierLetter:
            case UnicodeCategory.OtherLetter:
            case UnicodeCategory.LetterNumber:
            case UnicodeCategory.NonSpacingMark:
            case UnicodeCategory.SpacingCombiningMark:
            case UnicodeCategory.EnclosingMark:
            case UnicodeCategory.DecimalDigitNumber:
            case UnicodeCategory.ConnectorPunctuation:
                return true;
            case UnicodeCategory.OtherSymbol:
                return InRanges(AlphabeticSymbolRanges, v);
            default:
                return false;
        }
    }

    /// <summary>Rust regex <c>\s</c>: the Unicode White_Space property.</summary>
    internal static bool IsWhiteSpace(int codePoint) => InRanges(WhiteSpaceRanges, codePoint);

    private static CharClass ClassifyAscii(char c)
    {
        if ((uint)((c | 0x20) - 'a') <= 'z' - 'a' || (uint)(c - '0') <= 9 || c == '_')
        {
            return CharClass.Word;
        }

        return c is ' ' or (>= '\t' and <= '\r') ? CharClass.Space : CharClass.Other;
    }

    private static bool InRanges((int First, int Last)[] ranges, int value)
    {
        int lo = 0;
        int hi = ranges.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            if (value < ranges[mid].First)
            {
                hi = mid - 1;
            }
            else if (value > ranges[mid].Last)
            {
                lo = mid + 1;
            }
            else
            {
                return true;
            }
        }

        return false;
    }
}
