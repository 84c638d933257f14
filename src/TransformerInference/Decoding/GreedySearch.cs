using static TorchSharp.torch;

namespace TransformerInference.Decoding;

/// <summary>Greedy decoding, or sampling when the options ask for it: one row per input; a row leaves when it
/// produces <c>[EOS]</c> or reaches the length limit.</summary>
internal sealed class GreedySearch : Search
{
    private readonly List<int>[] _histories;
    private readonly double[] _logProbSums;
    private readonly bool[] _finished;
    private readonly Sampler? _sampler;
    private readonly Action<int, int>? _onToken;
    private readonly int[] _initial;
    private int[] _live; // input index of each row
    private long[] _feed;

    public GreedySearch(ISeq2SeqModel model, IReadOnlyList<IReadOnlyList<int>> sources, DecodingOptions options, int maxNew,
        Action<int, int>? onToken) : base(model, options, maxNew)
    {
        var count = sources.Count;
        _histories = Enumerable.Range(0, count).Select(_ => new List<int>()).ToArray();
        _logProbSums = new double[count];
        _finished = new bool[count];
        _initial = Enumerable.Range(0, count).ToArray();
        _live = _initial;
        _feed = Enumerable.Repeat((long)StartId, count).ToArray();
        _sampler = options.Sample ? new Sampler(options, sources) : null;
        _onToken = onToken;
    }

    public override IReadOnlyList<int> InitialRows => _initial;

    public override int Rows => _live.Length;

    public override void Feed(List<long> tokens) => tokens.AddRange(_feed);

    public override IReadOnlyList<int> Advance(Tensor logits)
    {
        if (TakesArgmax)
        {
            // Plain greedy: each row's best log-probability and its index (on the host for CPU scores).
            var (tokens, best) = Best(logits);
            return Take(tokens, best, StepIndex++);
        }
        var step = StepIndex++;
        // Processors rewrite a copy of the raw logits (as Hugging Face's do); reported scores stay the model's
        // log-probabilities.
        var live = _live;
        var scores = Processing.Process(logits, () => live.Select(i => (IReadOnlyList<int>)_histories[i]).ToList(), step);
        if (_sampler is null && ReferenceEquals(scores, logits))
        {
            // No processor changed anything this step: plain greedy after all.
            var (tokens, best) = Best(logits);
            return Take(tokens, best, step);
        }
        var picked = _sampler is null ? scores.argmax(-1, keepdim: true)
            : tensor(_sampler.Choose(scores, live), new long[] { live.Length, 1 }).to(logits.device);
        var next = picked.cpu().data<long>().ToArray();
        var chosen = logits.log_softmax(-1).gather(1, picked).cpu().data<float>().ToArray();
        return Take(next, chosen, step);
    }

    public override bool TakesArgmax => _sampler is null && !Processing.ChangesScoresAt(StepIndex);

    public override IReadOnlyList<int> Advance(ReadOnlySpan<long> tokens, ReadOnlySpan<float> logProbabilities)
    {
        if (!TakesArgmax) throw new InvalidOperationException("This step's scores are processed or sampled; pass them whole.");
        if (tokens.Length != Rows || logProbabilities.Length != Rows)
            throw new ArgumentException($"Expected {Rows} rows, got {tokens.Length} tokens and {logProbabilities.Length} scores.", nameof(tokens));
        return Take(tokens, logProbabilities, StepIndex++);
    }

    /// <summary>Records the chosen token of every row and returns the rows that continue.</summary>
    private List<int> Take(ReadOnlySpan<long> next, ReadOnlySpan<float> chosen, int step)
    {
        var live = _live;
        var keep = new List<int>(live.Length);
        for (var r = 0; r < live.Length; r++)
        {
            var input = live[r];
            var token = (int)next[r];
            _logProbSums[input] += chosen[r];
            if (token == EosId && !Options.IgnoreEos)
            {
                _finished[input] = true;
                continue;
            }
            _histories[input].Add(token);
            _onToken?.Invoke(input, token);
            if (step + 1 < MaxNew) keep.Add(r);
        }
        _live = new int[keep.Count];
        _feed = new long[keep.Count];
        for (var i = 0; i < keep.Count; i++)
        {
            _live[i] = live[keep[i]];
            _feed[i] = next[keep[i]];
        }
        return keep;
    }

    public override IReadOnlyList<IReadOnlyList<Hypothesis>> Results() => Enumerable.Range(0, _histories.Length)
        .Select(i => (IReadOnlyList<Hypothesis>)new[] { new Hypothesis(_histories[i], _logProbSums[i], _logProbSums[i], _finished[i]) })
        .ToArray();
}
