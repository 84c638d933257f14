using static TorchSharp.torch;

namespace TransformerInference.Decoding;

/// <summary>Rewrites next-token log-probabilities [rows, vocab] before a token is chosen: minimum length,
/// repetition penalty, no-repeat n-grams. Histories are the tokens generated so far, one list per row.</summary>
internal static class LogitsProcessing
{
    public static bool IsActive(DecodingOptions o) => o.MinNewTokens > 0 || o.RepetitionPenalty != 1.0 || o.NoRepeatNgramSize > 0;

    /// <summary>Applies the processors in place to <paramref name="logProbs"/>.</summary>
    public static void Apply(Tensor logProbs, IReadOnlyList<IReadOnlyList<int>> histories, int step, int eosId, DecodingOptions o)
    {
        if (step < o.MinNewTokens) logProbs.select(1, eosId).fill_(double.NegativeInfinity);
        if (o.RepetitionPenalty == 1.0 && o.NoRepeatNgramSize == 0) return;
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
