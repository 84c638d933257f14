using TorchSharp;
using TransformerInference.Modeling;
using static TorchSharp.torch;

namespace TransformerInference.Decoding;

/// <summary>Rewrites next-token scores [rows, vocab] before a token is chosen: banned words, minimum length,
/// repetition penalty, no-repeat n-grams, then forced first/last tokens. Histories are the tokens generated so far
/// (without the start token), one list per row. Built once per search; steps where nothing applies cost nothing.</summary>
internal sealed class LogitsProcessing : IDisposable
{
    private readonly DecodingOptions _o;
    private readonly int _maxNew, _eosId, _startId;
    private readonly IReadOnlyList<IReadOnlyList<int>> _multiTokenBans;
    private readonly Tensor? _banMask; // [vocab]: -inf at single-token bad words, else 0; built once per search

    public LogitsProcessing(DecodingOptions o, int maxNew, int eosId, int startId, int vocab, Device device)
    {
        _o = o;
        _maxNew = maxNew;
        _eosId = eosId;
        _startId = startId;
        // As Hugging Face: a bad word that is just [eos] is ignored, and so are ids outside the vocabulary.
        var bad = (o.BadWordsIds ?? Array.Empty<IReadOnlyList<int>>())
            .Where(w => w.Count > 0 && w[^1] < vocab && !(w.Count == 1 && w[0] == eosId)).ToList();
        _multiTokenBans = bad.Where(w => w.Count > 1).ToList();
        var single = bad.Where(w => w.Count == 1).Select(w => (long)w[0]).Distinct().ToArray();
        if (single.Length > 0)
        {
            using var scope = NewDisposeScope();
            var mask = zeros(vocab, ScalarType.Float32, device);
            mask.index_fill_(0, tensor(single, device: device), Held.NegativeInfinity); // rooted Scalars: see Held
            _banMask = mask.MoveToOuterDisposeScope();
        }
    }

    /// <summary>Whether step <paramref name="step"/> changes any score (the ban mask aside).</summary>
    public bool ActiveAt(int step) => step < _o.MinGenerated || _o.RepetitionPenalty != 1.0 || _o.NoRepeatNgramSize > 0
        || _multiTokenBans.Count > 0 || (step == 0 && _o.ForcedBosTokenId is not null)
        || (step == _maxNew - 1 && _o.ForcedEosTokenId is not null);

    /// <summary>Whether <see cref="Process"/> rewrites any score at step <paramref name="step"/> (ban mask included).</summary>
    public bool ChangesScoresAt(int step) => _banMask is not null || ActiveAt(step);

    /// <summary>Scores with every processor of this step applied: <paramref name="scores"/> itself when none
    /// applies, else a new tensor (the input is never modified). <paramref name="rowHistories"/> is called only
    /// when a processor reads the histories, so plain steps allocate nothing for them.</summary>
    public Tensor Process(Tensor scores, Func<IReadOnlyList<IReadOnlyList<int>>> rowHistories, int step)
    {
        var active = ActiveAt(step);
        if (_banMask is null && !active) return scores;
        var result = _banMask is null ? scores.clone() : Held.Add(scores, _banMask);
        if (!active) return result;
        var vocab = result.shape[1];
        var histories = _multiTokenBans.Count > 0 || _o.RepetitionPenalty != 1.0 || _o.NoRepeatNgramSize != 0 ? rowHistories() : null;
        if (_multiTokenBans.Count > 0) BanWords(result, histories!, _multiTokenBans, _startId);
        if (step < _o.MinGenerated) result.select(1, _eosId).fill_(Held.NegativeInfinity);
        if (_o.RepetitionPenalty != 1.0 || _o.NoRepeatNgramSize != 0) Penalise(result, histories!, _startId, _o);
        // Hugging Face's forced-token processors: every other score -inf, the forced one 0. The last token the limit
        // allows is forced after the first one, as its list applies them.
        int? forced = null;
        if (step == 0 && _o.ForcedBosTokenId is { } bos) forced = bos;
        if (step == _maxNew - 1 && _o.ForcedEosTokenId is { } eos) forced = eos;
        if (forced is { } f)
        {
            if (f >= vocab) throw new ArgumentException($"The forced token {f} is outside the vocabulary ({vocab}).", nameof(scores));
            result.fill_(Held.NegativeInfinity);
            result.select(1, f).fill_(Held.Zero);
        }
        return result;
    }

    public void Dispose() => _banMask?.Dispose();

    /// <summary>Bans the last token of every multi-token bad word whose other tokens end the row's text (start token first).</summary>
    private static void BanWords(Tensor scores, IReadOnlyList<IReadOnlyList<int>> histories, IReadOnlyList<IReadOnlyList<int>> bad, int startId)
    {
        foreach (var word in bad)
        {
            var banned = word[^1];
            var prefix = word.Count - 1;
            for (var row = 0; row < histories.Count; row++)
            {
                var history = histories[row];
                if (history.Count + 1 < prefix) continue;
                var match = true;
                for (var j = 0; j < prefix && match; j++)
                {
                    var at = history.Count - prefix + j; // -1 is the start token
                    match = (at < 0 ? startId : history[at]) == word[j];
                }
                if (!match) continue;
                using var cell = scores[row, banned];
                cell.fill_(Held.NegativeInfinity);
            }
        }
    }

    /// <summary>Repetition penalty and no-repeat n-grams over the decoder input so far: the start token, then the
    /// generated ones (as Hugging Face's processors see <c>input_ids</c>).</summary>
    private static void Penalise(Tensor logProbs, IReadOnlyList<IReadOnlyList<int>> histories, int startId, DecodingOptions o)
    {
        for (var row = 0; row < histories.Count; row++)
        {
            var history = histories[row].Prepend(startId).ToList();
            var scores = logProbs[row];
            if (o.RepetitionPenalty != 1.0)
            {
                using var seen = tensor(history.Distinct().Select(t => (long)t).ToArray(), device: logProbs.device);
                // CTRL's rule: negative scores are multiplied by the penalty, positive ones divided.
                using var picked = scores.index_select(0, seen);
                using var negative = picked.lt(Held.Zero);
                using var penalty = o.RepetitionPenalty.ToScalar(); // held until the native calls return
                using var multiplied = picked.mul(penalty);
                using var divided = picked.div(penalty);
                using var result = multiplied.where(negative, divided);
                scores.index_copy_(0, seen, result);
            }
            if (o.NoRepeatNgramSize > 0)
            {
                var banned = BannedByNgrams(history, o.NoRepeatNgramSize);
                if (banned.Count > 0)
                {
                    using var index = tensor(banned.Select(t => (long)t).ToArray(), device: logProbs.device);
                    scores.index_fill_(0, index, Held.NegativeInfinity);
                }
            }
        }
    }

    /// <summary>Tokens that would complete an n-gram already present in <paramref name="history"/>.</summary>
    public static List<int> BannedByNgrams(IReadOnlyList<int> history, int n)
    {
        var banned = new List<int>();
        if (history.Count < n) return banned;
        var prefixStart = history.Count - (n - 1);
        for (var start = 0; start + n <= history.Count; start++)
        {
            var same = true;
            for (var j = 0; j < n - 1 && same; j++) same = history[start + j] == history[prefixStart + j];
            if (same) banned.Add(history[start + n - 1]);
        }
        return banned;
    }
}
