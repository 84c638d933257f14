using System.Buffers;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace TransformerInference.Tokenization;

/// <summary>The Hugging Face translation tokenizer families <see cref="SentencePieceTranslationTokenizer"/> reproduces.</summary>
public enum TranslationTokenizerFamily
{
    /// <summary><c>MarianTokenizer</c>: <c>source.spm</c> / <c>target.spm</c> and one <c>vocab.json</c> (or, with
    /// <c>separate_vocabs</c>, <c>vocab.json</c> + <c>target_vocab.json</c>); ids + <c>&lt;/s&gt;</c>.</summary>
    Marian,

    /// <summary><c>M2M100Tokenizer</c>: <c>sentencepiece.bpe.model</c> + <c>vocab.json</c>; <c>__xx__</c> + ids + <c>&lt;/s&gt;</c>.</summary>
    M2M100,

    /// <summary><c>NllbTokenizer</c>: <c>sentencepiece.bpe.model</c> with the fairseq id offset; <c>xxx_Xxxx</c> + ids + <c>&lt;/s&gt;</c>.</summary>
    Nllb,

    /// <summary><c>MBart50Tokenizer</c>: <c>sentencepiece.bpe.model</c> with the fairseq id offset, language codes after
    /// the pieces, then <c>&lt;mask&gt;</c>; <c>xx_XX</c> + ids + <c>&lt;/s&gt;</c>.</summary>
    MBart50,

    /// <summary><c>T5Tokenizer</c>: <c>spiece.model</c> ids, <c>&lt;extra_id_N&gt;</c> sentinels counted down from the
    /// last id; ids + <c>&lt;/s&gt;</c>, the task prefix is part of the text.</summary>
    T5,
}

/// <summary>
/// The Hugging Face slow (SentencePiece) tokenizers of translation models — <c>MarianTokenizer</c>,
/// <c>M2M100Tokenizer</c>, <c>NllbTokenizer</c>, <c>MBart50Tokenizer</c> and <c>T5Tokenizer</c> — loaded from a model
/// folder, giving the same ids and decoded text as Hugging Face.
/// </summary>
/// <remarks>
/// <para>Text is first split at the special-token strings it contains (<c>&lt;/s&gt;</c>, language codes, T5
/// sentinels, …), which become their ids as in Hugging Face; each remaining part is normalized as the SentencePiece
/// model's normalizer does it (NFKC-based <c>nmt_nfkc</c> character map, white-space runs collapsed, leading and
/// trailing white space dropped, <c>▁</c> prefix), split into pieces exactly as <c>sentencepiece</c> splits it (BPE
/// merge order and unigram Viterbi with its tie rules; runs of unknown characters become one piece), and
/// each piece is mapped to the family's id: Marian and M2M100 look the piece string up in their vocabulary file,
/// NLLB and mBART-50 add the fairseq offset to the SentencePiece id, T5 uses it as it is; a piece without an id gets
/// the unknown id. The family's framing is then added: Marian and T5 append <c>&lt;/s&gt;</c>; M2M100, NLLB and
/// mBART-50 put the language token first and <c>&lt;/s&gt;</c> last (NLLB with <c>legacy_behaviour</c>:
/// <c>… &lt;/s&gt; [lang]</c>).</para>
/// <para>Decoding drops special tokens (including <c>&lt;unk&gt;</c> and every language token), joins the pieces,
/// turns <c>▁</c> into spaces, trims, and applies Hugging Face's <c>clean_up_tokenization</c> when the folder's
/// <c>clean_up_tokenization_spaces</c> is true.</para>
/// <para>The <see cref="Tokenizer"/> methods inherited from Microsoft.ML.Tokenizers encode the source side with the
/// default source language (<see cref="SourceLanguage"/>); token offsets refer to the normalized text of the part they
/// come from, where spaces are <c>▁</c>. Instances are immutable and thread-safe.</para>
/// </remarks>
public sealed partial class SentencePieceTranslationTokenizer : Tokenizer, ITranslationTokenizer
{
    /// <summary>The language codes of <c>M2M100Tokenizer</c> (<c>language_codes = "m2m100"</c>), in id order.</summary>
    private static readonly string[] M2M100Languages =
        ("af am ar ast az ba be bg bn br bs ca ceb cs cy da de el en es et fa ff fi fr fy ga gd gl gu ha he hi hr ht hu hy "
        + "id ig ilo is it ja jv ka kk km kn ko lb lg ln lo lt lv mg mk ml mn mr ms my ne nl no ns oc or pa pl ps pt ro ru "
        + "sd si sk sl so sq sr ss su sv sw ta th tl tn tr uk ur uz vi wo xh yi yo zh zu").Split(' ');

    /// <summary>The language codes of <c>M2M100Tokenizer</c> with <c>language_codes = "wmt21"</c>.</summary>
    private static readonly string[] Wmt21Languages = ["en", "ha", "is", "ja", "cs", "ru", "zh", "de"];

    private const int FairseqOffset = 1; // fairseq: <s>=0 <pad>=1 </s>=2 <unk>=3, spm id n (n >= 3) -> n + 1

    private readonly Parts _parts;
    private readonly SentencePieceSegmenter _sourceModel;
    private readonly SentencePieceSegmenter _targetModel;
    private readonly Dictionary<int, string> _idToToken;
    private readonly Dictionary<string, int> _languageIds; // code -> id
    private readonly Dictionary<string, int> _languageTokenIds; // token text -> id
    private readonly HashSet<int> _specialIds;
    private readonly HashSet<string> _specialTokens;
    private readonly (string Token, int Id, bool LStrip, bool RStrip)[] _splitTokens; // special strings split out of text, longest first
    private readonly SearchValues<char> _splitTokenStarts; // their first characters: the split jumps between them
    private readonly string[] _fairseqPieces;
    private readonly bool _cleanUpSpaces;
    private readonly bool _legacyBehaviour;
    private readonly string _unknownToken;

    /// <summary>What a family's builder produces: its models, vocabularies, special and language tokens.</summary>
    private sealed class Parts
    {
        public required SentencePieceSegmenter SourceModel { get; init; }
        public required SentencePieceSegmenter TargetModel { get; init; }
        public Dictionary<string, int>? SourceVocab { get; init; } // Marian, M2M100: piece -> id by string
        public Dictionary<string, int>? TargetVocab { get; init; }
        public string[] FairseqPieces { get; init; } = []; // NLLB, mBART-50: spm id -> piece
        public bool SpmIds { get; init; } // T5: id = spm id
        public Dictionary<int, string> IdToToken { get; } = [];
        public Dictionary<string, int> LanguageIds { get; } = new(StringComparer.Ordinal);
        public Dictionary<string, int> LanguageTokenIds { get; } = new(StringComparer.Ordinal);
        public HashSet<int> SpecialIds { get; } = [];
        public Dictionary<string, int> SpecialTokens { get; } = new(StringComparer.Ordinal);
        public int Eos { get; set; }
        public int Unk { get; set; }
        public int Pad { get; set; }
        public int SourceSize { get; set; }
        public int TargetSize { get; set; }

        public void AddSpecial(string token, int id)
        {
            SpecialIds.Add(id);
            SpecialTokens.TryAdd(token, id);
            IdToToken.TryAdd(id, token);
        }

        public void AddLanguage(string code, string token, int id)
        {
            LanguageIds[code] = id;
            LanguageTokenIds[token] = id;
            IdToToken[id] = token;
            AddSpecial(token, id);
        }
    }

    private SentencePieceTranslationTokenizer(TranslationTokenizerFamily family, Config config, string folder)
    {
        Family = family;
        _cleanUpSpaces = config.CleanUpSpaces;
        _legacyBehaviour = config.LegacyBehaviour;
        _unknownToken = config.Unk;
        Parts parts = family switch
        {
            TranslationTokenizerFamily.Marian => BuildMarian(config, folder),
            TranslationTokenizerFamily.M2M100 => BuildM2M100(config, folder),
            TranslationTokenizerFamily.T5 => BuildT5(config, folder),
            _ => BuildFairseq(config, folder),
        };
        _parts = parts;
        _sourceModel = parts.SourceModel;
        _targetModel = parts.TargetModel;
        _idToToken = parts.IdToToken;
        _languageIds = parts.LanguageIds;
        _languageTokenIds = parts.LanguageTokenIds;
        _specialIds = parts.SpecialIds;
        _specialTokens = new HashSet<string>(parts.SpecialTokens.Keys, StringComparer.Ordinal);
        _fairseqPieces = parts.FairseqPieces;
        EndOfSentenceId = parts.Eos;
        UnknownId = parts.Unk;
        PadId = parts.Pad;
        VocabularySize = parts.SourceSize;
        TargetVocabularySize = parts.TargetSize;
        _splitTokens = parts.SpecialTokens
            .Select(p => (p.Key, p.Value, config.Strip.TryGetValue(p.Key, out var s) && s.LStrip, config.Strip.TryGetValue(p.Key, out s) && s.RStrip))
            .Where(t => t.Key.Length > 0)
            .OrderByDescending(t => t.Key.Length).ThenBy(t => t.Key, StringComparer.Ordinal).ToArray();
        _splitTokenStarts = SearchValues.Create([.. _splitTokens.Select(t => t.Token[0]).Distinct()]);

        SourceLanguage = config.SourceLanguage is { } source && _languageIds.ContainsKey(source) ? source : null; // Marian configs name languages that are not tokens.
        TargetLanguage = config.TargetLanguage is { } target && _languageIds.ContainsKey(target) ? target : null;
        if (UsesLanguageTokens && SourceLanguage is null)
        {
            throw new InvalidDataException(
                $"Tokenizer config '{config.Path}': src_lang '{config.SourceLanguage}' is missing or not a language of this tokenizer.");
        }

        Languages = [.. _languageIds.OrderBy(pair => pair.Value).Select(pair => pair.Key)];
    }

    /// <summary>Marian: pieces looked up in <c>vocab.json</c> (both sides) or, with <c>separate_vocabs</c>, the source
    /// in <c>vocab.json</c> and the target in <c>target_vocab.json</c>; <c>&gt;&gt;xx&lt;&lt;</c> codes of a shared
    /// vocabulary are its languages.</summary>
    private static Parts BuildMarian(Config config, string folder)
    {
        SentencePieceSegmenter sourceModel = SentencePieceSegmenter.Load(Path.Combine(folder, "source.spm"));
        SentencePieceSegmenter targetModel = SentencePieceSegmenter.Load(Path.Combine(folder, "target.spm"));
        Dictionary<string, int> source = ReadVocab(Path.Combine(folder, "vocab.json"));
        Dictionary<string, int> target = config.SeparateVocabs ? ReadVocab(Path.Combine(folder, "target_vocab.json")) : source;
        var parts = new Parts { SourceModel = sourceModel, TargetModel = targetModel, SourceVocab = source, TargetVocab = target };
        foreach ((string token, int id) in target)
        {
            parts.IdToToken.TryAdd(id, token);
        }

        if (!config.SeparateVocabs)
        {
            foreach ((string token, int id) in source)
            {
                if (token.Length > 4 && token.StartsWith(">>", StringComparison.Ordinal) && token.EndsWith("<<", StringComparison.Ordinal))
                {
                    parts.LanguageIds[token[2..^2]] = id;
                    parts.LanguageTokenIds[token] = id;
                }
            }
        }

        parts.Eos = Require(source, config.Eos, "eos_token", "vocab.json", folder);
        parts.Unk = Require(source, config.Unk, "unk_token", "vocab.json", folder);
        parts.Pad = Require(target, config.Pad ?? "<pad>", "pad_token", config.SeparateVocabs ? "target_vocab.json" : "vocab.json", folder);
        foreach (string? token in new[] { config.Eos, config.Unk, config.Pad }.Concat(config.Additional))
        {
            if (token is not null && target.TryGetValue(token, out int id))
            {
                parts.AddSpecial(token, id);
            }
        }

        parts.SourceSize = source.Count;
        parts.TargetSize = target.Count;
        return parts;
    }

    /// <summary>M2M100: pieces looked up in <c>vocab.json</c>; language token <c>__xx__</c> i has id len(vocab.json) + i.</summary>
    private static Parts BuildM2M100(Config config, string folder)
    {
        SentencePieceSegmenter model = SentencePieceSegmenter.Load(Path.Combine(folder, "sentencepiece.bpe.model"));
        Dictionary<string, int> vocab = ReadVocab(Path.Combine(folder, "vocab.json"));
        var parts = new Parts { SourceModel = model, TargetModel = model, SourceVocab = vocab, TargetVocab = vocab };
        foreach ((string token, int id) in vocab)
        {
            parts.IdToToken.TryAdd(id, token);
        }

        string[] codes = config.LanguageCodes switch
        {
            null or "m2m100" => M2M100Languages,
            "wmt21" => Wmt21Languages,
            string other => throw new NotSupportedException(
                $"Tokenizer config '{config.Path}': language_codes '{other}' is not supported (only m2m100 and wmt21)."),
        };
        for (int i = 0; i < codes.Length; i++)
        {
            parts.AddLanguage(codes[i], $"__{codes[i]}__", vocab.Count + i);
        }

        parts.Eos = Require(vocab, config.Eos, "eos_token", "vocab.json", folder);
        parts.Unk = Require(vocab, config.Unk, "unk_token", "vocab.json", folder);
        parts.Pad = Require(vocab, config.Pad ?? "<pad>", "pad_token", "vocab.json", folder);
        foreach (string? token in new[] { config.Bos, config.Eos, config.Unk, config.Pad, config.Sep })
        {
            if (token is not null && vocab.TryGetValue(token, out int id))
            {
                parts.AddSpecial(token, id);
            }
        }

        parts.SourceSize = parts.TargetSize = vocab.Count + codes.Length + config.MadeUpWords;
        return parts;
    }

    /// <summary>NLLB and mBART-50: fairseq ids (spm id + 1, with <c>&lt;s&gt; &lt;pad&gt; &lt;/s&gt; &lt;unk&gt;</c>
    /// as 0–3), then the language codes, then <c>&lt;mask&gt;</c>. The codes and their ids come from
    /// <c>added_tokens_decoder</c>; a config without it (older releases) lists them in <c>additional_special_tokens</c>,
    /// numbered in that order after the pieces.</summary>
    private static Parts BuildFairseq(Config config, string folder)
    {
        SentencePieceSegmenter model = SentencePieceSegmenter.Load(Path.Combine(folder, "sentencepiece.bpe.model"));
        var pieces = new string[model.Count];
        foreach ((string piece, int spmId) in model.Vocabulary)
        {
            if ((uint)spmId < (uint)pieces.Length)
            {
                pieces[spmId] = piece;
            }
        }

        var parts = new Parts { SourceModel = model, TargetModel = model, FairseqPieces = pieces };
        // fairseq's four specials take ids 0-3; spm's own <unk>, <s>, </s> (0-2) are never used.
        string[] fairseq = [config.Bos ?? "<s>", config.Pad ?? "<pad>", config.Eos, config.Unk];
        for (int i = 0; i < fairseq.Length; i++)
        {
            parts.AddSpecial(fairseq[i], i);
        }

        int firstAdded = pieces.Length + FairseqOffset;
        List<(int Id, string Content, bool Special)> added = config.AddedTokens.Where(t => t.Id >= firstAdded).ToList();
        if (added.Count == 0)
        {
            if (config.Additional.Count == 0)
            {
                throw new InvalidDataException(
                    $"Tokenizer config '{config.Path}' lists no language codes (neither added_tokens_decoder nor additional_special_tokens).");
            }

            added = config.Additional.Select((code, i) => (firstAdded + i, code, true)).ToList();
            added.Add((firstAdded + config.Additional.Count, config.Mask ?? "<mask>", true));
        }

        int maxId = firstAdded - 1;
        foreach ((int id, string content, bool special) in added)
        {
            maxId = Math.Max(maxId, id);
            if (content != config.Mask && content != "<mask>")
            {
                parts.AddLanguage(content, content, id);
            }
            else if (special)
            {
                parts.AddSpecial(content, id);
            }
            else
            {
                parts.IdToToken[id] = content;
            }
        }

        parts.Eos = 2;
        parts.Unk = 3;
        parts.Pad = 1;
        parts.SourceSize = parts.TargetSize = maxId + 1;
        return parts;
    }

    /// <summary>T5: ids are <c>spiece.model</c> ids (<c>&lt;pad&gt;</c>=0, <c>&lt;/s&gt;</c>=1, <c>&lt;unk&gt;</c>=2);
    /// <c>&lt;extra_id_i&gt;</c> is id len(spiece) + extra_ids - 1 - i (or as <c>added_tokens_decoder</c> lists it).</summary>
    private static Parts BuildT5(Config config, string folder)
    {
        SentencePieceSegmenter model = SentencePieceSegmenter.Load(Path.Combine(folder, "spiece.model"));
        var parts = new Parts { SourceModel = model, TargetModel = model, SpmIds = true };
        foreach ((string piece, int id) in model.Vocabulary)
        {
            parts.IdToToken.TryAdd(id, piece);
        }

        int RequirePiece(string token, string name) => model.Vocabulary.TryGetValue(token, out int id)
            ? id
            : throw new InvalidDataException($"Tokenizer folder '{folder}': {name} '{token}' is not in spiece.model.");
        parts.Eos = RequirePiece(config.Eos, "eos_token");
        parts.Unk = RequirePiece(config.Unk, "unk_token");
        parts.Pad = RequirePiece(config.Pad ?? "<pad>", "pad_token");
        parts.AddSpecial(config.Eos, parts.Eos);
        parts.AddSpecial(config.Unk, parts.Unk);
        parts.AddSpecial(config.Pad ?? "<pad>", parts.Pad);

        int maxId = model.Count - 1;
        List<(int Id, string Content, bool Special)> added = config.AddedTokens.Where(t => t.Id >= model.Count).ToList();
        if (added.Count == 0)
        {
            int extra = config.ExtraIds ?? config.Additional.Count(t => t.StartsWith("<extra_id_", StringComparison.Ordinal));
            added = Enumerable.Range(0, extra).Select(i => (model.Count + extra - 1 - i, $"<extra_id_{i}>", true)).ToList();
        }

        foreach ((int id, string content, bool _) in added)
        {
            maxId = Math.Max(maxId, id);
            parts.AddSpecial(content, id);
        }

        parts.SourceSize = parts.TargetSize = maxId + 1;
        return parts;
    }

    private static int Require(Dictionary<string, int> vocab, string token, string name, string file, string folder)
        => vocab.TryGetValue(token, out int id)
            ? id
            : throw new InvalidDataException($"Tokenizer folder '{folder}': {name} '{token}' is not in {file}.");

    /// <summary>Whether the family frames its inputs with language tokens (M2M100, NLLB, mBART-50).</summary>
    private bool UsesLanguageTokens => Family is TranslationTokenizerFamily.M2M100 or TranslationTokenizerFamily.Nllb or TranslationTokenizerFamily.MBart50;
    /// <summary>Which Hugging Face tokenizer this one reproduces (from <c>tokenizer_class</c>).</summary>
    public TranslationTokenizerFamily Family { get; }

    /// <summary>
    /// The default source language (<c>src_lang</c> of <c>tokenizer_config.json</c>, e.g. <c>en</c> or
    /// <c>eng_Latn</c>); <see langword="null"/> for Marian, whose models translate one language pair.
    /// </summary>
    public string? SourceLanguage { get; }

    /// <summary>The default target language (<c>tgt_lang</c>), or <see langword="null"/> for Marian.</summary>
    public string? TargetLanguage { get; }

    /// <summary>
    /// The language codes accepted by <see cref="LanguageId"/>, in id order: M2M100 <c>en</c>, NLLB <c>eng_Latn</c>,
    /// Marian the codes of <c>&gt;&gt;xx&lt;&lt;</c> tokens in <c>vocab.json</c> (none for one-pair models).
    /// </summary>
    public IReadOnlyList<string> Languages { get; }

    /// <summary>Id of <c>&lt;/s&gt;</c>, appended to every encoded text.</summary>
    public int EndOfSentenceId { get; }

    /// <summary>Id of <c>&lt;unk&gt;</c>, given to pieces without an id.</summary>
    public int UnknownId { get; }

    /// <summary>Id of <c>&lt;pad&gt;</c> (Marian's and T5's decoder start token).</summary>
    public int PadId { get; }

    /// <summary>
    /// Number of source-side ids (Hugging Face's <c>len(tokenizer)</c>; M2M100 also counts its <c>madeupword</c>
    /// slots, which the model's embedding holds).
    /// </summary>
    public int VocabularySize { get; }

    /// <summary>Number of target-side ids (differs from <see cref="VocabularySize"/> only for Marian models with
    /// separate vocabularies).</summary>
    public int TargetVocabularySize { get; }

    /// <inheritdoc/>
    int ITranslationTokenizer.SourceVocabularySize => VocabularySize;

    /// <summary>Ids that decoding drops: <c>&lt;/s&gt;</c>, <c>&lt;unk&gt;</c>, <c>&lt;pad&gt;</c>, language tokens, ….</summary>
    public IReadOnlyCollection<int> SpecialTokenIds => _specialIds;

    /// <summary>Loads the tokenizer of a Hugging Face model folder.</summary>
    /// <param name="folder">Folder holding <c>tokenizer_config.json</c> (its <c>tokenizer_class</c> picks the family) and
    /// the family's files: Marian <c>source.spm</c>, <c>target.spm</c>, <c>vocab.json</c> (and
    /// <c>target_vocab.json</c> with separate vocabularies); M2M100 <c>sentencepiece.bpe.model</c>, <c>vocab.json</c>;
    /// NLLB and mBART-50 <c>sentencepiece.bpe.model</c>; T5 <c>spiece.model</c>.</param>
    /// <returns>The tokenizer.</returns>
    /// <exception cref="ArgumentException"><paramref name="folder"/> is null or empty.</exception>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">A required file is missing.</exception>
    /// <exception cref="InvalidDataException">A file is malformed or lacks a required entry.</exception>
    /// <exception cref="NotSupportedException">The tokenizer class or one of its options is not supported.</exception>
    public static SentencePieceTranslationTokenizer Create(string folder)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        string full = Path.GetFullPath(folder);
        if (!Directory.Exists(full))
        {
            throw new DirectoryNotFoundException($"Tokenizer folder '{full}' was not found.");
        }

        Config config = Config.Read(Path.Combine(full, "tokenizer_config.json"));
        TranslationTokenizerFamily family = config.TokenizerClass switch
        {
            "MarianTokenizer" => TranslationTokenizerFamily.Marian,
            "M2M100Tokenizer" => TranslationTokenizerFamily.M2M100,
            "NllbTokenizer" or "NllbTokenizerFast" => TranslationTokenizerFamily.Nllb,
            "MBart50Tokenizer" or "MBart50TokenizerFast" => TranslationTokenizerFamily.MBart50,
            "T5Tokenizer" or "T5TokenizerFast" => TranslationTokenizerFamily.T5,
            _ => throw new NotSupportedException(
                $"Tokenizer config '{config.Path}': tokenizer_class '{config.TokenizerClass}' is not supported "
                + "(MarianTokenizer, M2M100Tokenizer, NllbTokenizer, MBart50Tokenizer or T5Tokenizer)."),
        };
        return new SentencePieceTranslationTokenizer(family, config, full);
    }

    /// <summary>
    /// Id of a language token, e.g. to force it as the first generated token (<c>forced_bos_token_id</c>).
    /// </summary>
    /// <param name="language">A code from <see cref="Languages"/> (<c>ne</c>, <c>npi_Deva</c>) or the token itself
    /// (<c>__ne__</c>, Marian <c>&gt;&gt;fra&lt;&lt;</c>).</param>
    /// <returns>The id.</returns>
    /// <exception cref="ArgumentException">The language is not one of this tokenizer's.</exception>
    public int LanguageId(string language)
    {
        ArgumentNullException.ThrowIfNull(language);
        if (_languageIds.TryGetValue(language, out int id) || _languageTokenIds.TryGetValue(language, out id))
        {
            return id;
        }

        string known = Languages.Count == 0 ? "none" : string.Join(", ", Languages.Take(8)) + (Languages.Count > 8 ? ", …" : string.Empty);
        throw new ArgumentException($"Language '{language}' is not a language of this {Family} tokenizer (known: {known}).", nameof(language));
    }

    /// <summary>Encodes source text as the model's encoder input (Hugging Face <c>tokenizer(text).input_ids</c>).</summary>
    /// <param name="text">The text.</param>
    /// <param name="sourceLanguage">M2M100/NLLB: the source language (default <see cref="SourceLanguage"/>); must be
    /// <see langword="null"/> for Marian.</param>
    /// <returns>The ids, special tokens included.</returns>
    public IReadOnlyList<int> EncodeSource(string text, string? sourceLanguage = null)
        => Encode(text, sourceLanguage, target: false, out _).Select(token => token.Id).ToArray();

    /// <summary>
    /// Encodes target text (Hugging Face <c>tokenizer(text_target=text).input_ids</c>, the labels): Marian with
    /// <c>target.spm</c>, M2M100/NLLB with the target language token.
    /// </summary>
    /// <param name="text">The text.</param>
    /// <param name="targetLanguage">M2M100/NLLB: the target language (default <see cref="TargetLanguage"/>); must be
    /// <see langword="null"/> for Marian.</param>
    /// <returns>The ids, special tokens included.</returns>
    public IReadOnlyList<int> EncodeTarget(string text, string? targetLanguage = null)
        => Encode(text, targetLanguage, target: true, out _).Select(token => token.Id).ToArray();

    /// <summary>Encodes text into tokens: the SentencePiece pieces with their ids, and the special tokens.</summary>
    /// <param name="text">The text.</param>
    /// <param name="language">The language (default: <see cref="SourceLanguage"/> or <see cref="TargetLanguage"/>);
    /// <see langword="null"/> for Marian.</param>
    /// <param name="target">Whether to encode the target side (see <see cref="EncodeTarget"/>).</param>
    /// <param name="normalizedText">The normalized text the offsets refer to (spaces as <c>▁</c>).</param>
    /// <returns>The tokens; a piece's <see cref="EncodedToken.Value"/> is its text (unknown characters as themselves).</returns>
    /// <exception cref="ArgumentNullException"><paramref name="text"/> is null.</exception>
    /// <exception cref="ArgumentException">The language is unknown, or given for Marian.</exception>
    public IReadOnlyList<EncodedToken> Encode(string text, string? language, bool target, out string normalizedText)
    {
        ArgumentNullException.ThrowIfNull(text);
        var tokens = new List<EncodedToken>();
        EncodeCore(text, language, target, tokens, out normalizedText);
        return tokens;
    }

    /// <summary>Gets the token text of an id (a piece, a special token or a language token).</summary>
    /// <param name="id">The id.</param>
    /// <returns>The token, or <see langword="null"/> when no token has this id.</returns>
    public string? IdToToken(int id)
    {
        if (_idToToken.TryGetValue(id, out string? token))
        {
            return token;
        }

        int spmId = id - FairseqOffset;
        return _fairseqPieces.Length > 0 && spmId >= 3 && spmId < _fairseqPieces.Length ? _fairseqPieces[spmId] : null;
    }

    /// <summary>Whether decoding drops <paramref name="id"/> (special and language tokens).</summary>
    /// <param name="id">The id.</param>
    /// <returns><see langword="true"/> for special tokens.</returns>
    public bool IsSpecialToken(int id) => _specialIds.Contains(id);

    /// <summary>Decodes ids as Hugging Face <c>decode(ids, skip_special_tokens=True)</c> does.</summary>
    /// <param name="ids">The ids.</param>
    /// <returns>The text.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="ids"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">NLLB: an id is outside the vocabulary.</exception>
    public override string Decode(IEnumerable<int> ids) => Decode(ids, skipSpecialTokens: true);

    /// <summary>Decodes ids to text.</summary>
    /// <param name="ids">The ids.</param>
    /// <param name="skipSpecialTokens">Whether to drop special tokens (Hugging Face's <c>skip_special_tokens</c>). When
    /// false the special tokens are written as their text, joined as the family's <c>convert_tokens_to_string</c>
    /// joins them; that form is meant for inspection, not checked against Hugging Face.</param>
    /// <returns>The text.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="ids"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">NLLB: an id is outside the vocabulary.</exception>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var tokens = new List<string>();
        foreach (int id in ids)
        {
            string token = DecodeToken(id);
            if (skipSpecialTokens && (_specialIds.Contains(id) || _specialTokens.Contains(token)))
            {
                continue;
            }

            tokens.Add(token);
        }

        string text = Family switch
        {
            TranslationTokenizerFamily.Marian => JoinWithSpecials(tokens, _targetModel, " ").Replace('\u2581', ' '),
            TranslationTokenizerFamily.Nllb => string.Concat(tokens).Replace('\u2581', ' '),
            _ => JoinWithSpecials(tokens, _targetModel, string.Empty), // M2M100, mBART-50, T5: sentencepiece's decode
        };
        text = PythonStrip(text);
        return _cleanUpSpaces ? CleanUpTokenization(text) : text;
    }

    /// <summary>Decodes ids into <paramref name="destination"/> (special tokens dropped).</summary>
    /// <param name="ids">The ids.</param>
    /// <param name="destination">Where to write the text.</param>
    /// <param name="idsConsumed">How many ids the written text covers.</param>
    /// <param name="charsWritten">How many characters were written.</param>
    /// <returns><see cref="OperationStatus.Done"/>, or <see cref="OperationStatus.DestinationTooSmall"/> when only the
    /// decoding of a prefix of the ids fits.</returns>
    public override OperationStatus Decode(IEnumerable<int> ids, Span<char> destination, out int idsConsumed, out int charsWritten)
    {
        ArgumentNullException.ThrowIfNull(ids);
        int[] all = ids.ToArray();
        for (int count = all.Length; count >= 0; count--)
        {
            string text = Decode(all.AsSpan(0, count).ToArray());
            if (text.Length <= destination.Length)
            {
                text.AsSpan().CopyTo(destination);
                idsConsumed = count;
                charsWritten = text.Length;
                return count == all.Length ? OperationStatus.Done : OperationStatus.DestinationTooSmall;
            }
        }

        idsConsumed = charsWritten = 0;
        return OperationStatus.DestinationTooSmall;
    }

    /// <inheritdoc/>
    /// <remarks>Encodes the source side in <see cref="SourceLanguage"/>, special tokens included; a
    /// <see cref="EncodeSettings.MaxTokenCount"/> keeps the first tokens.</remarks>
    protected override EncodeResults<EncodedToken> EncodeToTokens(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings)
    {
        string input = text ?? textSpan.ToString();
        var tokens = new List<EncodedToken>();
        EncodeCore(input, null, target: false, tokens, out string normalized);
        int consumed = input.Length;
        if (settings.MaxTokenCount > 0 && tokens.Count > settings.MaxTokenCount)
        {
            tokens.RemoveRange(settings.MaxTokenCount, tokens.Count - settings.MaxTokenCount);
            consumed = tokens.Count == 0 ? 0 : tokens[^1].Offset.End.GetOffset(normalized.Length);
        }

        return new EncodeResults<EncodedToken> { Tokens = tokens, NormalizedText = normalized, CharsConsumed = consumed };
    }

    private void EncodeCore(string text, string? language, bool target, List<EncodedToken> tokens, out string normalized)
    {
        SentencePieceSegmenter model = target ? _targetModel : _sourceModel;
        Dictionary<string, int>? vocab = target ? _parts.TargetVocab : _parts.SourceVocab;
        int? languageId = null;
        if (!UsesLanguageTokens)
        {
            if (language is not null)
            {
                throw new ArgumentException(
                    $"{Family} tokenizers take no language argument"
                    + (Family == TranslationTokenizerFamily.Marian
                        ? "; multilingual Marian models read a >>xx<< token at the start of the text."
                        : "; T5 models read a task prefix in the text (\"translate English to German: ...\")."),
                    nameof(language));
            }
        }
        else
        {
            language ??= target ? TargetLanguage ?? SourceLanguage : SourceLanguage;
            languageId = LanguageId(language!);
        }

        bool prefixLanguage = languageId is not null && !(Family == TranslationTokenizerFamily.Nllb && _legacyBehaviour);
        if (prefixLanguage)
        {
            tokens.Add(new EncodedToken(languageId!.Value, IdToToken(languageId.Value)!, new Range(0, 0)));
        }

        if (Family == TranslationTokenizerFamily.Marian)
        {
            // MarianTokenizer._tokenize: a ">>xx<<" code at the start is its own token; every match is cut from the text.
            Match code = MarianLanguageCode().Match(text);
            if (code.Success && code.Index == 0)
            {
                tokens.Add(new EncodedToken(MapPiece(code.Value, vocab), code.Value, new Range(0, 0)));
            }

            text = MarianLanguageCode().Replace(text, string.Empty);
        }

        var normalizedParts = new StringBuilder();
        foreach ((string part, int? specialId) in SplitSpecialTokens(text))
        {
            if (specialId is { } id)
            {
                tokens.Add(new EncodedToken(id, part, new Range(normalizedParts.Length, normalizedParts.Length)));
                continue;
            }

            int start = normalizedParts.Length;
            List<SentencePieceSegmenter.Piece> pieces = model.Split(part, out string partNormalized);
            foreach (SentencePieceSegmenter.Piece piece in pieces)
            {
                tokens.Add(new EncodedToken(MapPiece(piece.Text, vocab), piece.Text, new Range(start + piece.Start, start + piece.End)));
            }

            normalizedParts.Append(partNormalized);
        }

        normalized = normalizedParts.ToString();
        int end = normalized.Length;
        tokens.Add(new EncodedToken(EndOfSentenceId, IdToToken(EndOfSentenceId)!, new Range(end, end)));
        if (languageId is not null && !prefixLanguage)
        {
            tokens.Add(new EncodedToken(languageId.Value, IdToToken(languageId.Value)!, new Range(end, end)));
        }
    }

    /// <summary>
    /// Hugging Face's split at added special tokens: the text's special-token strings (longest first, left to right)
    /// become their own ids; a token marked <c>lstrip</c>/<c>rstrip</c> in <c>added_tokens_decoder</c> takes the white
    /// space on that side with it; empty parts are dropped.
    /// </summary>
    private List<(string Part, int? SpecialId)> SplitSpecialTokens(string text)
    {
        var parts = new List<(string Part, int? SpecialId)>();
        int textStart = 0, position = 0;
        while (position < text.Length)
        {
            int next = text.AsSpan(position).IndexOfAny(_splitTokenStarts); // no special token starts before this
            if (next < 0)
            {
                break;
            }

            position += next;
            (string Token, int Id, bool LStrip, bool RStrip)? found = null;
            foreach (var candidate in _splitTokens)
            {
                if (string.CompareOrdinal(text, position, candidate.Token, 0, candidate.Token.Length) == 0)
                {
                    found = candidate;
                    break;
                }
            }

            if (found is not { } special)
            {
                position++;
                continue;
            }

            string before = text[textStart..position];
            if (special.LStrip)
            {
                before = before.TrimEnd();
            }

            if (before.Length > 0)
            {
                parts.Add((before, null));
            }

            parts.Add((special.Token, special.Id));
            position += special.Token.Length;
            if (special.RStrip)
            {
                while (position < text.Length && char.IsWhiteSpace(text[position]))
                {
                    position++;
                }
            }

            textStart = position;
        }

        if (textStart < text.Length || parts.Count == 0)
        {
            parts.Add((text[textStart..], null));
        }

        return parts;
    }

    private int MapPiece(string piece, Dictionary<string, int>? vocab)
    {
        if (vocab is not null)
        {
            return vocab.TryGetValue(piece, out int id) ? id : UnknownId;
        }

        if (_parts.SpmIds)
        {
            return _sourceModel.Vocabulary.TryGetValue(piece, out int direct) ? direct : UnknownId;
        }

        // fairseq _convert_token_to_id: spm id + offset, or <unk> when sentencepiece gives its unknown id 0.
        return _sourceModel.Vocabulary.TryGetValue(piece, out int spmId) && spmId != _sourceModel.UnknownId
            ? spmId + FairseqOffset
            : UnknownId;
    }

    private string DecodeToken(int id)
    {
        if (_idToToken.TryGetValue(id, out string? token))
        {
            return token;
        }

        if (_fairseqPieces.Length == 0)
        {
            // Marian/M2M100 _convert_id_to_token: decoder.get(index, unk_token); T5: a spare embedding row, no piece.
            return _unknownToken;
        }

        int spmId = id - FairseqOffset;
        if (spmId < 0 || spmId >= _fairseqPieces.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(id), id, $"Id {id} is outside the {Family} vocabulary (0..{VocabularySize - 1}).");
        }

        return _fairseqPieces[spmId];
    }

    /// <summary>
    /// Marian/M2M100 <c>convert_tokens_to_string</c>: runs of ordinary pieces go through sentencepiece's
    /// <c>decode_pieces</c>; special tokens are written as they are, followed by <paramref name="afterSpecial"/>.
    /// </summary>
    private string JoinWithSpecials(List<string> tokens, SentencePieceSegmenter model, string afterSpecial)
    {
        var builder = new StringBuilder();
        var run = new List<string>();
        foreach (string token in tokens)
        {
            if (_specialTokens.Contains(token))
            {
                builder.Append(DecodePieces(run, model)).Append(token).Append(afterSpecial);
                run.Clear();
            }
            else
            {
                run.Add(token);
            }
        }

        return builder.Append(DecodePieces(run, model)).ToString();
    }

    /// <summary>sentencepiece's <c>DecodePieces</c>: control pieces vanish, <c>&lt;unk&gt;</c> is " ⁇ ", the first
    /// piece loses its leading <c>▁</c>, runs of byte pieces (<c>&lt;0xXX&gt;</c>) become the UTF-8 text they spell.</summary>
    internal static string DecodePieces(List<string> pieces, SentencePieceSegmenter model)
    {
        var builder = new StringBuilder();
        var bytes = new List<byte>();
        bool bos = true;
        foreach (string piece in pieces)
        {
            bool known = model.Vocabulary.TryGetValue(piece, out int id);
            if (known && model.IsByte(id, out byte value))
            {
                bytes.Add(value);
                continue;
            }

            AppendBytes(builder, bytes, ref bos);
            if (model.ControlPieces.Contains(piece))
            {
                continue; // <s>, </s>: invisible
            }

            if (!known)
            {
                builder.Append(piece); // a piece the model does not hold is written as it is
                bos = false;
                continue;
            }

            if (id == model.UnknownId)
            {
                builder.Append(" \u2047 "); // sentencepiece's surface of <unk>
                bos = false;
                continue;
            }

            ReadOnlySpan<char> surface = piece;
            if (bos && surface.StartsWith("\u2581"))
            {
                surface = surface[1..];
            }

            foreach (char c in surface)
            {
                builder.Append(c == '\u2581' ? ' ' : c);
            }

            bos = false;
        }

        AppendBytes(builder, bytes, ref bos);
        return builder.ToString();
    }

    /// <summary>sentencepiece's <c>ProcessBytePieces</c>: the bytes as UTF-8, one U+FFFD for each byte that does not
    /// start a valid sequence.</summary>
    private static void AppendBytes(StringBuilder builder, List<byte> bytes, ref bool bos)
    {
        if (bytes.Count == 0)
        {
            return;
        }

        ReadOnlySpan<byte> span = CollectionsMarshal.AsSpan(bytes);
        while (!span.IsEmpty)
        {
            if (Rune.DecodeFromUtf8(span, out Rune rune, out int consumed) == OperationStatus.Done)
            {
                builder.Append(rune.ToString());
                span = span[consumed..];
            }
            else
            {
                builder.Append('\uFFFD');
                span = span[1..];
            }
        }

        bytes.Clear();
        bos = false;
    }

    /// <summary>Python's <c>str.strip()</c>: trims characters for which <c>str.isspace()</c> is true.</summary>
    private static string PythonStrip(string text)
    {
        static bool IsSpace(char c) => char.IsWhiteSpace(c) || c is >= '\x1c' and <= '\x1f';
        int start = 0, end = text.Length;
        while (start < end && IsSpace(text[start]))
        {
            start++;
        }

        while (end > start && IsSpace(text[end - 1]))
        {
            end--;
        }

        return text[start..end];
    }

    /// <summary>Hugging Face's <c>clean_up_tokenization</c>.</summary>
    private static string CleanUpTokenization(string text)
        => text.Replace(" .", ".").Replace(" ?", "?").Replace(" !", "!").Replace(" ,", ",").Replace(" ' ", "'")
            .Replace(" n't", "n't").Replace(" 'm", "'m").Replace(" 's", "'s").Replace(" 've", "'ve").Replace(" 're", "'re");

    private static Dictionary<string, int> ReadVocab(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"Vocabulary file '{path}' was not found.", path);
        }

        try
        {
            using JsonDocument document = UntrustedJson.ParseFile(path, (message, e) => new InvalidDataException($"Vocabulary file '{path}': {message}", e));
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException($"Vocabulary file '{path}' must hold a JSON object of piece → id.");
            }

            var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (JsonProperty entry in document.RootElement.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0)
                {
                    throw new InvalidDataException(
                        $"Vocabulary file '{path}': entry '{entry.Name}' must have a non-negative integer id, not {entry.Value.GetRawText()}.");
                }

                vocab[entry.Name] = id;
            }

            return vocab;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Vocabulary file '{path}' is not valid JSON: {e.Message}", e);
        }
    }

    [GeneratedRegex(">>.+<<")]
    private static partial Regex MarianLanguageCode();

    /// <inheritdoc/>
    IReadOnlyList<int> ITranslationTokenizer.EncodeSource(string text, string? sourceLanguage) => EncodeSource(text, sourceLanguage);

    /// <summary>The first token the decoder is forced to produce: the target language's token for M2M100, NLLB and
    /// mBART-50 (<paramref name="targetLanguage"/>, else <see cref="TargetLanguage"/>); null for Marian and T5, whose
    /// target language is fixed or named in the input.</summary>
    /// <param name="targetLanguage">A code from <see cref="Languages"/>, or null for the default.</param>
    /// <returns>The id, or null.</returns>
    /// <exception cref="ArgumentException">The language is unknown, or none is given and the tokenizer has no default.</exception>
    public int? TargetLanguageToken(string? targetLanguage)
    {
        if (!UsesLanguageTokens)
        {
            return targetLanguage is null ? null : LanguageId(targetLanguage);
        }

        string language = targetLanguage ?? TargetLanguage ?? throw new ArgumentException(
            $"A multilingual {Family} model needs a target language (known: {string.Join(", ", Languages.Take(8))}{(Languages.Count > 8 ? ", …" : "")}).",
            nameof(targetLanguage));
        return LanguageId(language);
    }

    /// <summary>The entries of <c>tokenizer_config.json</c> this class uses.</summary>
    private sealed record Config(
        string Path,
        string TokenizerClass,
        string Eos,
        string Unk,
        string? Pad,
        string? Bos,
        string? Sep,
        string? Mask,
        string? SourceLanguage,
        string? TargetLanguage,
        string? LanguageCodes,
        int MadeUpWords,
        bool CleanUpSpaces,
        bool LegacyBehaviour,
        bool SeparateVocabs,
        int? ExtraIds,
        List<string> Additional,
        List<(int Id, string Content, bool Special)> AddedTokens,
        Dictionary<string, (bool LStrip, bool RStrip)> Strip)
    {
        public static Config Read(string path)
        {
            if (!File.Exists(path))
            {
                throw new FileNotFoundException($"Tokenizer config '{path}' was not found.", path);
            }

            try
            {
                using JsonDocument document = UntrustedJson.ParseFile(path, (message, e) => new InvalidDataException($"Tokenizer config '{path}': {message}", e));
                JsonElement root = document.RootElement;
                if (root.ValueKind != JsonValueKind.Object)
                {
                    throw new InvalidDataException($"Tokenizer config '{path}' must hold a JSON object.");
                }

                var added = new List<(int, string, bool)>();
                var strip = new Dictionary<string, (bool, bool)>(StringComparer.Ordinal);
                if (root.TryGetProperty("added_tokens_decoder", out JsonElement decoder) && decoder.ValueKind == JsonValueKind.Object)
                {
                    foreach (JsonProperty entry in decoder.EnumerateObject())
                    {
                        if (!int.TryParse(entry.Name, out int id) || id < 0 || id == int.MaxValue || entry.Value.ValueKind != JsonValueKind.Object
                            || Token(entry.Value) is not string content)
                        {
                            throw new InvalidDataException($"Tokenizer config '{path}': bad added_tokens_decoder entry '{entry.Name}'.");
                        }

                        bool special = entry.Value.TryGetProperty("special", out JsonElement s) && s.ValueKind == JsonValueKind.True;
                        added.Add((id, content, special));
                        strip[content] = (Bool(entry.Value, "lstrip"), Bool(entry.Value, "rstrip"));
                    }
                }

                var additional = new List<string>();
                if (root.TryGetProperty("additional_special_tokens", out JsonElement extra) && extra.ValueKind == JsonValueKind.Array)
                {
                    additional.AddRange(extra.EnumerateArray().Select(Token).OfType<string>());
                }

                return new Config(
                    path,
                    String(root, "tokenizer_class") ?? throw new InvalidDataException($"Tokenizer config '{path}' has no tokenizer_class."),
                    TokenOf(root, "eos_token") ?? "</s>",
                    TokenOf(root, "unk_token") ?? "<unk>",
                    TokenOf(root, "pad_token"),
                    TokenOf(root, "bos_token"),
                    TokenOf(root, "sep_token"),
                    TokenOf(root, "mask_token"),
                    String(root, "src_lang") ?? String(root, "source_lang"),
                    String(root, "tgt_lang") ?? String(root, "target_lang"),
                    String(root, "language_codes"),
                    NumberOf(root, "num_madeup_words", path, max: 1 << 20) ?? 8,
                    Bool(root, "clean_up_tokenization_spaces"),
                    Bool(root, "legacy_behaviour"),
                    Bool(root, "separate_vocabs"),
                    root.TryGetProperty("extra_ids", out JsonElement e) && e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int extraIds) ? extraIds : null,
                    additional,
                    added,
                    strip);
            }
            catch (JsonException e)
            {
                throw new InvalidDataException($"Tokenizer config '{path}' is not valid JSON: {e.Message}", e);
            }
        }

        /// <summary>An integer field within 0..<paramref name="max"/>, or null when absent; any other value is an error
        /// naming the field.</summary>
        private static int? NumberOf(JsonElement root, string name, string path, int max)
        {
            if (!root.TryGetProperty(name, out JsonElement value) || value.ValueKind == JsonValueKind.Null)
            {
                return null;
            }

            return value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out int number) && number >= 0 && number <= max
                ? number
                : throw new InvalidDataException($"Tokenizer config '{path}': field '{name}' must be an integer within 0..{max}, not {value.GetRawText()}.");
        }

        private static string? String(JsonElement root, string name)
            => root.TryGetProperty(name, out JsonElement value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

        private static bool Bool(JsonElement root, string name)
            => root.TryGetProperty(name, out JsonElement value) && value.ValueKind == JsonValueKind.True;

        private static string? TokenOf(JsonElement root, string name)
            => root.TryGetProperty(name, out JsonElement value) ? Token(value) : null;

        /// <summary>A token given as a string or as an AddedToken object with <c>content</c>.</summary>
        private static string? Token(JsonElement value) => value.ValueKind switch
        {
            JsonValueKind.String => value.GetString(),
            JsonValueKind.Object when value.TryGetProperty("content", out JsonElement c) && c.ValueKind == JsonValueKind.String => c.GetString(),
            _ => null,
        };
    }
}
