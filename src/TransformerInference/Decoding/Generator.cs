using static TorchSharp.torch;

namespace TransformerInference.Decoding;

/// <summary>
/// Search over an <see cref="ISeq2SeqModel"/>: greedy, sampling and beam search with a KV cache. The encoder runs
/// once per batch; each step feeds only the newest token of every live sequence. Knows nothing of layers.
/// </summary>
public static class Generator
{
    /// <summary>
    /// Generates target sequences for a batch of encoder inputs (each already framed as the model expects, e.g.
    /// <c>[SOS] ids [EOS]</c>). The batch is decoded together: finished sequences (greedy, sampling) or inputs whose
    /// beam search is over leave it. Results come back in input order.
    /// </summary>
    /// <param name="model">The model.</param>
    /// <param name="sources">Encoder input ids per sequence.</param>
    /// <param name="options">Search options (default greedy).</param>
    /// <param name="onToken">Called with (input index, token id) for each token as it is chosen (greedy and sampling; not for <c>[EOS]</c>).</param>
    /// <param name="cancellationToken">Checked before every step.</param>
    /// <returns>Per input, its hypotheses best first (<see cref="DecodingOptions.NBest"/> of them for beams, one otherwise).</returns>
    public static IReadOnlyList<IReadOnlyList<Hypothesis>> Generate(ISeq2SeqModel model, IReadOnlyList<IReadOnlyList<int>> sources,
        DecodingOptions? options = null, Action<int, int>? onToken = null, CancellationToken cancellationToken = default)
    {
        options = (options ?? new DecodingOptions()).Validate();
        // Fixed-length runs: a forced end token would end (or pollute) them.
        if (options.IgnoreEos && options.ForcedEosTokenId is not null) options = options with { ForcedEosTokenId = null };
        var maxNew = options.MaxNewTokens ?? (options.MaxLength is { } maxLength
            ? Math.Min(maxLength - 1, model.MaxTargetLength)
            : model.MaxTargetLength - 1);
        foreach (var (id, name) in new[] { (options.DecoderStartTokenId, nameof(options.DecoderStartTokenId)),
                     (options.ForcedBosTokenId, nameof(options.ForcedBosTokenId)), (options.ForcedEosTokenId, nameof(options.ForcedEosTokenId)) })
        {
            if (id >= model.TargetVocabSize)
                throw new ArgumentException($"{name} {id} is outside the target vocabulary ({model.TargetVocabSize}).", nameof(options));
        }
        if (maxNew > model.MaxTargetLength)
            throw new ArgumentException($"MaxNewTokens {maxNew} exceeds the model's {model.MaxTargetLength} target positions.", nameof(options));
        foreach (var s in sources)
        {
            if (s.Count == 0) throw new ArgumentException("An encoder input is empty; frame it with the start/end tokens.", nameof(sources));
            if (s.Count > model.MaxSourceLength)
                throw new ArgumentException($"An encoder input has {s.Count} positions; the model accepts at most {model.MaxSourceLength}.", nameof(sources));
        }
        if (sources.Count == 0) return Array.Empty<IReadOnlyList<Hypothesis>>();
        using var noGrad = inference_mode();
        if (options.BeamSize > 1) return BeamSearch.Run(model, sources, maxNew, options, cancellationToken);
        return SampleOrGreedy(model, sources, maxNew, options, onToken, cancellationToken);
    }

    /// <summary>The first decoder input: <see cref="DecodingOptions.DecoderStartTokenId"/> or the model's start id.</summary>
    internal static int StartId(ISeq2SeqModel model, DecodingOptions o) => o.DecoderStartTokenId ?? model.SosId;

    /// <summary>A right-padded int64 batch <c>[B, S]</c> on the model's device.</summary>
    internal static Tensor Batch(ISeq2SeqModel model, IReadOnlyList<IReadOnlyList<int>> sources)
    {
        var width = sources.Max(s => s.Count);
        var data = new long[sources.Count * width];
        Array.Fill(data, model.PadId);
        for (var i = 0; i < sources.Count; i++)
            for (var j = 0; j < sources[i].Count; j++) data[i * width + j] = sources[i][j];
        using var host = tensor(data, new long[] { sources.Count, width });
        return host.to(model.Device);
    }

    private static IReadOnlyList<IReadOnlyList<Hypothesis>> SampleOrGreedy(ISeq2SeqModel model, IReadOnlyList<IReadOnlyList<int>> sources,
        int maxNew, DecodingOptions o, Action<int, int>? onToken, CancellationToken ct)
    {
        var count = sources.Count;
        ct.ThrowIfCancellationRequested();
        KvCache cache;
        using (var src = Batch(model, sources)) cache = model.Start(src, maxNew);
        using var _ = cache;
        var histories = Enumerable.Range(0, count).Select(_ => new List<int>()).ToArray();
        var logProbSums = new double[count];
        var finished = new bool[count];
        var live = Enumerable.Range(0, count).ToArray(); // input index of each cache row
        var start = StartId(model, o);
        var feed = Enumerable.Repeat((long)start, count).ToArray();
        var sampler = o.Sample ? new Sampler(o, sources) : null;
        using var processing = new LogitsProcessing(o, maxNew, model.EosId, start, model.TargetVocabSize, model.Device);
        for (var step = 0; step < maxNew && live.Length > 0; step++)
        {
            ct.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var tokens = tensor(feed, new long[] { live.Length, 1 }).to(model.Device);
            var logits = model.Step(tokens, cache);
            var logProbs = logits.log_softmax(-1);
            // Processors rewrite raw logits (as Hugging Face's do); reported scores stay the model's log-probabilities.
            var scores = processing.Process(logits, () => live.Select(i => (IReadOnlyList<int>)histories[i]).ToList(), step);
            long[] next;
            float[] chosen;
            if (sampler is null && ReferenceEquals(scores, logits))
            {
                // Plain greedy: the best log-probability and its index in one op.
                var (best, index) = logProbs.max(-1);
                next = index.cpu().data<long>().ToArray();
                chosen = best.cpu().data<float>().ToArray();
            }
            else
            {
                var picked = sampler is null ? scores.argmax(-1, keepdim: true)
                    : tensor(sampler.Choose(scores, live), new long[] { live.Length, 1 }).to(model.Device);
                next = picked.cpu().data<long>().ToArray();
                chosen = logProbs.gather(1, picked).cpu().data<float>().ToArray();
            }

            var keep = new List<long>(live.Length);
            for (var r = 0; r < live.Length; r++)
            {
                var input = live[r];
                var token = (int)next[r];
                logProbSums[input] += chosen[r];
                if (token == model.EosId && !o.IgnoreEos)
                {
                    finished[input] = true;
                    continue;
                }
                histories[input].Add(token);
                onToken?.Invoke(input, token);
                keep.Add(r);
            }
            if (keep.Count < live.Length && keep.Count > 0)
            {
                using var rows = tensor(keep.ToArray());
                cache.Reorder(rows);
            }
            live = keep.Select(r => live[r]).ToArray();
            feed = keep.Select(r => next[r]).ToArray();
        }
        return Enumerable.Range(0, count)
            .Select(i => (IReadOnlyList<Hypothesis>)new[] { new Hypothesis(histories[i], logProbSums[i], logProbSums[i], finished[i]) })
            .ToArray();
    }
}
