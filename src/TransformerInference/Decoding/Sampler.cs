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
        var weights = new double[vocab];
        for (var r = 0; r < rows; r++)
        {
            var row = new ArraySegment<float>(all, r * vocab, vocab);
            var candidates = Candidates(row);
            var max = candidates.Max(i => row[i]);
            double total = 0;
            var kept = 0;
            foreach (var i in candidates)
            {
                var v = row[i];
                if (float.IsNegativeInfinity(v)) continue;
                candidates[kept] = i;
                weights[kept] = Math.Exp((v - max) / _options.Temperature);
                total += weights[kept++];
            }
            if (_options.TopP < 1.0)
            {
                // Smallest prefix of the (sorted) candidates whose probability mass reaches TopP.
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
            result[r] = candidates[Math.Max(pick, 0)];
        }
        return result;
    }

    /// <summary>
    /// Token ids to sample from: the k best by descending score with top-k (a bounded heap, no full sort), every
    /// token sorted by descending score with top-p only, else every token in vocabulary order (no sort needed).
    /// Ties go to the lower id.
    /// </summary>
    private int[] Candidates(ArraySegment<float> row)
    {
        var vocab = row.Count;
        Comparison<int> better = (a, b) => row[b].CompareTo(row[a]) is var c && c != 0 ? c : a.CompareTo(b);
        if (_options.TopK > 0 && _options.TopK < vocab)
        {
            // Min-heap of the k best seen so far: its root is the worst of them.
            var heap = new PriorityQueue<int, int>(_options.TopK, Comparer<int>.Create((a, b) => better(b, a)));
            for (var i = 0; i < vocab; i++)
            {
                if (heap.Count < _options.TopK) heap.Enqueue(i, i);
                else if (better(i, heap.Peek()) < 0) heap.EnqueueDequeue(i, i);
            }
            var top = new int[heap.Count];
            for (var i = top.Length - 1; i >= 0; i--) top[i] = heap.Dequeue();
            return top;
        }
        var order = Enumerable.Range(0, vocab).ToArray();
        if (_options.TopP < 1.0) Array.Sort(order, better);
        return order;
    }
}
