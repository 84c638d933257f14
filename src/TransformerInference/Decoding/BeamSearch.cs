using static TorchSharp.torch;

namespace TransformerInference.Decoding;

/// <summary>Beam search for one input: K live beams share a KV cache reordered to follow their parents.</summary>
internal static class BeamSearch
{
    public static IReadOnlyList<Hypothesis> Run(ISeq2SeqModel model, IReadOnlyList<int> source, int maxNew, DecodingOptions o, CancellationToken ct)
    {
        var k = o.BeamSize;
        ct.ThrowIfCancellationRequested();
        KvCache cache;
        using (var src = Generator.Batch(model, new[] { source })) cache = model.Start(src, maxNew);
        using var _ = cache;
        using (var expand = zeros(k, ScalarType.Int64)) cache.Reorder(expand);

        var beams = Enumerable.Range(0, k).Select(_ => new List<int>()).ToList();
        // Only the first beam is live at step 0, so the K beams do not start as copies of one another.
        var scores = Enumerable.Range(0, k).Select(i => i == 0 ? 0.0 : double.NegativeInfinity).ToArray();
        var done = new List<Hypothesis>();
        double Rank(double logProb, int length) => o.LengthPenalty == 0 ? logProb : logProb / Math.Pow(length, o.LengthPenalty);
        var processing = LogitsProcessing.IsActive(o);

        for (var step = 0; step < maxNew; step++)
        {
            ct.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var feed = beams.Select(b => (long)(b.Count == 0 ? model.SosId : b[^1])).ToArray();
            var logProbs = model.Step(tensor(feed, new long[] { k, 1 }).to(model.Device), cache).log_softmax(-1);
            if (processing) LogitsProcessing.Apply(logProbs, beams, step, model.EosId, o);
            var vocab = logProbs.shape[1];
            using var running = tensor(scores).to(ScalarType.Float32).to(model.Device);
            var total = (logProbs + running.unsqueeze(1)).flatten();
            var (values, indices) = total.topk((int)Math.Min(2 * k, total.shape[0]));
            var topValues = values.cpu().data<float>().ToArray();
            var topIndices = indices.cpu().data<long>().ToArray();

            var parents = new List<long>(k);
            var nextBeams = new List<List<int>>(k);
            var nextScores = new List<double>(k);
            for (var rank = 0; rank < topValues.Length && nextBeams.Count < k; rank++)
            {
                if (float.IsNegativeInfinity(topValues[rank])) break;
                var parent = (int)(topIndices[rank] / vocab);
                var token = (int)(topIndices[rank] % vocab);
                if (token == model.EosId && !o.IgnoreEos)
                {
                    if (rank < k) done.Add(new Hypothesis(beams[parent].ToArray(), topValues[rank], Rank(topValues[rank], beams[parent].Count + 1), true));
                    continue;
                }
                parents.Add(parent);
                nextBeams.Add(new List<int>(beams[parent]) { token });
                nextScores.Add(topValues[rank]);
            }
            if (nextBeams.Count == 0 || IsDone(done, nextScores, step + 1, k, o, Rank)) { beams = nextBeams; scores = nextScores.ToArray(); break; }
            while (nextBeams.Count < k)
            {
                // Fewer than K continuations exist (tiny vocabularies): pad with dead copies.
                parents.Add(parents[0]);
                nextBeams.Add(new List<int>(nextBeams[0]));
                nextScores.Add(double.NegativeInfinity);
            }
            using (var rows = tensor(parents.ToArray())) cache.Reorder(rows);
            beams = nextBeams;
            scores = nextScores.ToArray();
        }
        // Beams still live at the length limit compete with the finished ones.
        for (var i = 0; i < beams.Count; i++)
            if (!double.IsNegativeInfinity(scores[i]))
                done.Add(new Hypothesis(beams[i].ToArray(), scores[i], Rank(scores[i], Math.Max(beams[i].Count, 1)), false));
        return done.OrderByDescending(h => h.Score).Take(o.NBest).ToArray();
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
