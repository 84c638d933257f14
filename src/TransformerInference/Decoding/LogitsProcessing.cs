using static TorchSharp.torch;

namespace TransformerInference.Decoding;

/// <summary>Rewrites next-token scores [rows, vocab] before a token is chosen: banned words, minimum length,
/// repetition penalty, no-repeat n-grams, then forced first/last tokens. Histories are the tokens generated so far
/// (without the start token), one list per row.</summary>
internal static class LogitsProcessing
{
    public static bool IsActive(DecodingOptions o) => o.MinNewTokens > 0 || o.RepetitionPenalty != 1.0 || o.NoRepeatNgramSize > 0
        || o.BadWordsIds is { Count: > 0 } || o.ForcedBosTokenId is not null || o.ForcedEosTokenId is not null;

    /// <summary>Applies the processors in place to <paramref name="logProbs"/> at generation step
    /// <paramref name="step"/> of at most <paramref name="maxNew"/>; <paramref name="startId"/> is the decoder start token.</summary>
    public static void Apply(Tensor logProbs, IReadOnlyList<IReadOnlyList<int>> histories, int step, int maxNew, int eosId,
        int startId, DecodingOptions o)
    {
        var vocab = logProbs.shape[1];
        if (o.BadWordsIds is { Count: > 0 } bad) BanWords(logProbs, histories, bad, startId, vocab);
        if (step < o.MinNewTokens) logProbs.select(1, eosId).fill_(double.NegativeInfinity);
        if (o.RepetitionPenalty != 1.0 || o.NoRepeatNgramSize != 0) Penalise(logProbs, histories, o);
        // Hugging Face's forced-token processors: every other score -inf, the forced one 0. The last token the limit
        // allows is forced after the first one, as its list applies them.
        int? forced = null;
        if (step == 0 && o.ForcedBosTokenId is { } bos) forced = bos;
        if (step == maxNew - 1 && o.ForcedEosTokenId is { } eos) forced = eos;
        if (forced is { } f)
        {
            if (f >= vocab) throw new ArgumentException($"The forced token {f} is outside the vocabulary ({vocab}).", nameof(o));
            logProbs.fill_(double.NegativeInfinity);
            logProbs.select(1, f).fill_(0.0);
        }
    }

    /// <summary>Bans the last token of every bad-word sequence whose other tokens end the row's text (start token first).</summary>
    private static void BanWords(Tensor scores, IReadOnlyList<IReadOnlyList<int>> histories, IReadOnlyList<IReadOnlyList<int>> bad, int startId, long vocab)
    {
        foreach (var word in bad)
        {
            var banned = word[^1];
            if (banned >= vocab) continue; // as Hugging Face: ids outside the vocabulary are ignored
            if (word.Count == 1)
            {
                scores.select(1, banned).fill_(double.NegativeInfinity);
                continue;
            }
            for (var row = 0; row < histories.Count; row++)
            {
                var history = histories[row];
                var prefix = word.Count - 1;
                if (history.Count + 1 < prefix) continue;
                var match = true;
                for (var j = 0; j < prefix && match; j++)
                {
                    var at = history.Count - prefix + j; // -1 is the start token
                    match = (at < 0 ? startId : history[at]) == word[j];
                }
                if (!match) continue;
                using var cell = scores[row, banned];
                cell.fill_(double.NegativeInfinity);
            }
        }
    }

    private static void Penalise(Tensor logProbs, IReadOnlyList<IReadOnlyList<int>> histories, DecodingOptions o)
    {
        for (var row = 0; row < histories.Count; row++)
        {
            var history = histories[row];
            if (history.Count == 0) continue;
            var scores = logProbs[row];
            if (o.RepetitionPenalty != 1.0)
            {
                using var seen = tensor(history.Distinct().Select(t => (long)t).ToArray(), device: logProbs.device);
                // CTRL's rule: negative scores are multiplied by the penalty, positive ones divided.
                using var picked = scores.index_select(0, seen);
                using var negative = picked.lt(0);
                using var multiplied = picked.mul(o.RepetitionPenalty);
                using var divided = picked.div(o.RepetitionPenalty);
                using var result = multiplied.where(negative, divided);
                scores.index_copy_(0, seen, result);
            }
            if (o.NoRepeatNgramSize > 0)
            {
                var banned = BannedByNgrams(history, o.NoRepeatNgramSize);
                if (banned.Count > 0)
                {
                    using var index = tensor(banned.Select(t => (long)t).ToArray(), device: logProbs.device);
                    scores.index_fill_(0, index, double.NegativeInfinity);
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
