using static TorchSharp.torch;

namespace TransformerInference.Decoding;

/// <summary>
/// Beam search over a batch: every input keeps K live beams (rows <c>input·K … input·K+K−1</c> of one KV cache,
/// reordered each step to follow their parents); inputs whose search is over leave the batch.
/// </summary>
internal static class BeamSearch
{
    /// <summary>The search state of one input.</summary>
    private sealed class Input
    {
        public required int Index { get; init; }
        public List<List<int>> Beams { get; set; } = new();
        public double[] Scores { get; set; } = Array.Empty<double>();
        public List<Hypothesis> Done { get; } = new();
        public bool Over { get; set; }
    }

    public static IReadOnlyList<Hypothesis>[] Run(ISeq2SeqModel model, IReadOnlyList<IReadOnlyList<int>> sources, int maxNew,
        DecodingOptions o, CancellationToken ct)
    {
        var k = o.BeamSize;
        ct.ThrowIfCancellationRequested();
        KvCache cache;
        using (var src = Generator.Batch(model, sources)) cache = model.Start(src, maxNew);
        using var _ = cache;
        using (var inputs = arange(sources.Count, ScalarType.Int64))
        using (var expand = inputs.repeat_interleave(k))
            cache.Reorder(expand);

        // Only the first beam of each input is live at step 0, so the K beams do not start as copies of one another.
        var live = Enumerable.Range(0, sources.Count).Select(i => new Input
        {
            Index = i,
            Beams = Enumerable.Range(0, k).Select(_ => new List<int>()).ToList(),
            Scores = Enumerable.Range(0, k).Select(j => j == 0 ? 0.0 : double.NegativeInfinity).ToArray(),
        }).ToList();
        var all = live.ToArray();
        double Rank(double logProb, int length) => o.LengthPenalty == 0 ? logProb : logProb / Math.Pow(length, o.LengthPenalty);
        var start = Generator.StartId(model, o);
        using var processing = new LogitsProcessing(o, maxNew, model.EosId, start, model.TargetVocabSize, model.Device);

        for (var step = 0; step < maxNew && live.Count > 0; step++)
        {
            ct.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var rows = live.Count * k;
            var feed = live.SelectMany(s => s.Beams).Select(b => (long)(b.Count == 0 ? start : b[^1])).ToArray();
            var logProbs = processing.Process(model.Step(tensor(feed, new long[] { rows, 1 }).to(model.Device), cache).log_softmax(-1),
                () => live.SelectMany(s => s.Beams).ToList(), step);
            var vocab = logProbs.shape[1];
            var running = tensor(live.SelectMany(s => s.Scores).Select(v => (float)v).ToArray()).to(model.Device);
            var total = (logProbs + running.unsqueeze(1)).view(live.Count, k * vocab);
            var (values, indices) = total.topk((int)Math.Min(2 * k, k * vocab));
            var width = values.shape[1];
            var topValues = values.cpu().data<float>().ToArray();
            var topIndices = indices.cpu().data<long>().ToArray();

            var parents = new List<long>(rows);
            var stillLive = new List<Input>(live.Count);
            for (var position = 0; position < live.Count; position++)
            {
                var s = live[position];
                var nextBeams = new List<List<int>>(k);
                var nextScores = new List<double>(k);
                var nextParents = new List<long>(k);
                for (var rank = 0; rank < width && nextBeams.Count < k; rank++)
                {
                    var value = topValues[position * width + rank];
                    if (float.IsNegativeInfinity(value)) break;
                    var flat = topIndices[position * width + rank];
                    var parent = (int)(flat / vocab);
                    var token = (int)(flat % vocab);
                    if (token == model.EosId && !o.IgnoreEos)
                    {
                        if (rank < k) s.Done.Add(new Hypothesis(s.Beams[parent].ToArray(), value, Rank(value, s.Beams[parent].Count + 1), true));
                        continue;
                    }
                    nextParents.Add(position * k + parent);
                    nextBeams.Add(new List<int>(s.Beams[parent]) { token });
                    nextScores.Add(value);
                }
                s.Beams = nextBeams;
                s.Scores = nextScores.ToArray();
                if (nextBeams.Count == 0 || IsDone(s.Done, nextScores, step + 1, k, o, Rank))
                {
                    s.Over = true;
                    continue;
                }
                while (nextBeams.Count < k)
                {
                    // Fewer than K continuations exist (tiny vocabularies): pad with dead copies.
                    nextParents.Add(nextParents[0]);
                    nextBeams.Add(new List<int>(nextBeams[0]));
                    s.Scores = s.Scores.Append(double.NegativeInfinity).ToArray();
                }
                parents.AddRange(nextParents);
                stillLive.Add(s);
            }
            live = stillLive;
            if (live.Count > 0)
            {
                using var order = tensor(parents.ToArray());
                cache.Reorder(order);
            }
        }

        return all.Select(s =>
        {
            // Beams still live at the end compete with the finished ones.
            for (var i = 0; i < s.Beams.Count; i++)
                if (!double.IsNegativeInfinity(s.Scores[i]))
                    s.Done.Add(new Hypothesis(s.Beams[i].ToArray(), s.Scores[i], Rank(s.Scores[i], Math.Max(s.Beams[i].Count, 1)), false));
            return (IReadOnlyList<Hypothesis>)s.Done.OrderByDescending(h => h.Score).Take(o.NBest).ToArray();
        }).ToArray();
    }

    private static bool IsDone(List<Hypothesis> done, List<double> running, int length, int k, DecodingOptions o, Func<double, int, double> rank)
    {
        if (done.Count < k) return false;
        if (o.EarlyStopping) return true;
        // Without early stopping, go on while a live beam could still beat the worst kept hypothesis.
        var worst = done.OrderByDescending(h => h.Score).Take(k).Min(h => h.Score);
        return running.Count == 0 || rank(running.Max(), length) < worst;
    }
}
