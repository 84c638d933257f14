using static TorchSharp.torch;

namespace TransformerInference.Decoding;

/// <summary>
/// Draws the next token per row from temperature-scaled, top-k / top-p filtered probabilities. Runs on the host
/// with one seeded generator per input, derived from the seed and the input's ids, so a seed gives the same tokens
/// on every device and whatever else shares the batch.
/// </summary>
internal sealed class Sampler
{
    private readonly DecodingOptions _options;
    private readonly Random[] _randoms;

    public Sampler(DecodingOptions options, IReadOnlyList<IReadOnlyList<int>> sources)
    {
        _options = options;
        _randoms = sources.Select(s => options.Seed is { } seed ? new Random(Mix(seed, s)) : new Random()).ToArray();
    }

    /// <summary>FNV-1a over the seed and the ids (string.GetHashCode and HashCode are randomised per process).</summary>
    private static int Mix(int seed, IReadOnlyList<int> ids)
    {
        var h = 2166136261u;
        foreach (var v in ids.Prepend(seed))
            for (var shift = 0; shift < 32; shift += 8) h = (h ^ (uint)((v >> shift) & 0xff)) * 16777619u;
        return (int)h;
    }

    /// <summary>One token per row of <paramref name="logProbs"/>; <paramref name="inputs"/> maps rows to inputs.</summary>
    public long[] Choose(Tensor logProbs, IReadOnlyList<int> inputs)
    {
        var rows = (int)logProbs.shape[0];
        var vocab = (int)logProbs.shape[1];
        var all = logProbs.cpu().data<float>().ToArray();
        var result = new long[rows];
        var order = new int[vocab];
        var weights = new double[vocab];
        for (var r = 0; r < rows; r++)
        {
            var row = new ReadOnlySpan<float>(all, r * vocab, vocab);
            for (var i = 0; i < vocab; i++) order[i] = i;
            var rowArray = row.ToArray();
            Array.Sort(order, (a, b) => rowArray[b].CompareTo(rowArray[a]) is var c && c != 0 ? c : a.CompareTo(b));
            var limit = _options.TopK > 0 ? Math.Min(_options.TopK, vocab) : vocab;
            var max = rowArray[order[0]];
            double total = 0;
            var kept = 0;
            for (; kept < limit; kept++)
            {
                var v = rowArray[order[kept]];
                if (float.IsNegativeInfinity(v)) break;
                weights[kept] = Math.Exp((v - max) / _options.Temperature);
                total += weights[kept];
            }
            if (_options.TopP < 1.0)
            {
                // Smallest prefix of the sorted tokens whose probability mass reaches TopP.
                double mass = 0;
                var cut = 0;
                while (cut < kept)
                {
                    mass += weights[cut++] / total;
                    if (mass >= _options.TopP) break;
                }
                total = 0;
                for (var i = 0; i < cut; i++) total += weights[i];
                kept = cut;
            }
            var u = _randoms[inputs[r]].NextDouble() * total;
            var pick = kept - 1;
            for (var i = 0; i < kept; i++)
            {
                u -= weights[i];
                if (u <= 0) { pick = i; break; }
            }
            result[r] = order[Math.Max(pick, 0)];
        }
        return result;
    }
}
