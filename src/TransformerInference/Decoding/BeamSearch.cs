using TransformerInference.Modeling;
using static TorchSharp.torch;

namespace TransformerInference.Decoding;

/// <summary>
/// Beam search as Hugging Face's <c>generate</c> does it (the vectorized beam search of transformers 4.53 and
/// later): every input keeps K beams (K consecutive rows); each step the top 2·K continuations over all its beams are
/// ranked, those among the best K that end in <c>[EOS]</c> (or reach the length limit) are offered to the K finished
/// slots with their length-penalised score, and the best K others continue. Inputs whose search is over leave the
/// batch. The per-input rules are in <see cref="BeamInput"/>.
/// </summary>
internal sealed class BeamSearch : Search
{
    private readonly int _k;
    private readonly BeamInput[] _inputs;
    private readonly int[] _initial;
    private List<BeamInput> _live;

    public BeamSearch(ISeq2SeqModel model, int inputs, DecodingOptions options, int maxNew) : base(model, options, maxNew)
    {
        _k = options.BeamSize;
        _inputs = Enumerable.Range(0, inputs).Select(_ => new BeamInput(_k, options, maxNew, EosId)).ToArray();
        _live = _inputs.ToList();
        _initial = Enumerable.Range(0, inputs).SelectMany(i => Enumerable.Repeat(i, _k)).ToArray();
    }

    public override IReadOnlyList<int> InitialRows => _initial;

    public override int Rows => _live.Count * _k;

    public override void Feed(List<long> tokens)
    {
        foreach (var input in _live)
            foreach (var beam in input.Beams) tokens.Add(beam.Length == 0 ? StartId : beam[^1]);
    }

    public override IReadOnlyList<int> Advance(Tensor logits)
    {
        var step = StepIndex++;
        var live = _live;
        var logProbs = Processing.Process(logits.log_softmax(-1),
            () => live.SelectMany(s => s.Beams).Select(b => (IReadOnlyList<int>)b).ToList(), step);
        var vocab = logProbs.shape[1];
        using var running = tensor(live.SelectMany(s => s.RunningScores).ToArray(), device: logProbs.device);
        var total = Held.Add(logProbs, running.unsqueeze(1)).view(live.Count, _k * vocab);
        var (values, indices) = total.topk((int)Math.Min(2 * _k, _k * vocab));
        var width = (int)values.shape[1];
        var topValues = values.cpu().data<float>().ToArray();
        var topIndices = indices.cpu().data<long>().ToArray();

        var keep = new List<int>(Rows);
        var stillLive = new List<BeamInput>(live.Count);
        for (var position = 0; position < live.Count; position++)
        {
            var input = live[position];
            var parents = input.Consume(topValues.AsSpan(position * width, width), topIndices.AsSpan(position * width, width), vocab, step);
            if (input.Over) continue;
            foreach (var p in parents) keep.Add(position * _k + p);
            stillLive.Add(input);
        }
        _live = stillLive;
        return keep;
    }

    public override IReadOnlyList<IReadOnlyList<Hypothesis>> Results() => _inputs.Select(i => i.Results()).ToArray();
}

/// <summary>The beam search state of one input, step by step (Hugging Face's rules, float32 scores as it keeps them).</summary>
internal sealed class BeamInput
{
    /// <summary>Hugging Face's stand-in for minus infinity in beam bookkeeping (an open slot, a dead beam).</summary>
    private const float Blocked = -1.0e9f;

    private readonly int _k, _maxNew, _eosId;
    private readonly DecodingOptions _o;
    private readonly (float Score, float LogProbability, int[]? Tokens, bool Finished)[] _slots;
    private bool _improvable = true; // Hugging Face's is_early_stop_heuristic_unsatisfied

    public BeamInput(int k, DecodingOptions options, int maxNew, int eosId)
    {
        _k = k;
        _o = options;
        _maxNew = maxNew;
        _eosId = eosId;
        Beams = Enumerable.Range(0, k).Select(_ => Array.Empty<int>()).ToArray();
        // Only the first beam is live at the start, so the K beams do not begin as copies of one another.
        RunningScores = Enumerable.Range(0, k).Select(j => j == 0 ? 0f : Blocked).ToArray();
        _slots = Enumerable.Range(0, k).Select(_ => (Blocked, 0f, (int[]?)null, false)).ToArray();
    }

    /// <summary>Generated tokens of each open beam (no start token).</summary>
    public int[][] Beams { get; private set; }

    /// <summary>Summed processed log-probability of each open beam.</summary>
    public float[] RunningScores { get; private set; }

    /// <summary>Whether this input's search is over (its rows can leave the batch).</summary>
    public bool Over { get; private set; }

    /// <summary>
    /// Takes this step's top 2·K continuations (<paramref name="values"/>: running score + processed log-probability,
    /// best first; <paramref name="flat"/>: beam · vocab + token) and returns, for each new open beam, its parent beam.
    /// </summary>
    public int[] Consume(ReadOnlySpan<float> values, ReadOnlySpan<long> flat, long vocab, int step)
    {
        var n = values.Length;
        var generated = step + 1; // tokens after the start token once this step's is appended
        var atLimit = generated >= _maxNew;
        var hits = new bool[n];
        var allHit = true;
        for (var j = 0; j < n; j++)
        {
            hits[j] = atLimit || (flat[j] % vocab == _eosId && !_o.IgnoreEos);
            allHit &= hits[j];
        }

        // Open beams: the best K continuations, those that just stopped pushed to the bottom.
        var penalised = new float[n];
        for (var j = 0; j < n; j++) penalised[j] = hits[j] ? values[j] + Blocked : values[j];
        var order = Enumerable.Range(0, n).OrderByDescending(j => penalised[j]).Take(_k).ToArray();
        var parents = new int[order.Length];
        for (var i = 0; i < order.Length; i++) parents[i] = (int)(flat[order[i]] / vocab);
        var beams = new int[_k][];
        var scores = new float[_k];
        for (var i = 0; i < order.Length; i++)
        {
            var j = order[i];
            beams[i] = [.. Beams[parents[i]], (int)(flat[j] % vocab)];
            scores[i] = penalised[j];
        }
        for (var i = order.Length; i < _k; i++)
        {
            // Fewer continuations than beams (tiny vocabularies): dead copies.
            beams[i] = beams[0];
            scores[i] = Blocked + Blocked;
        }

        // Finished slots: continuations among the best K that stopped, ranked with the length penalty, against the
        // slots already held; the best K stay.
        var full = _slots.All(s => s.Finished);
        var lengthFactor = (float)Math.Pow(generated, _o.LengthPenalty);
        var merged = new List<(float Score, float LogProbability, int[]? Tokens, bool Finished)>(_k + n);
        merged.AddRange(_slots);
        for (var j = 0; j < n; j++)
        {
            var finished = hits[j] && j < _k;
            var score = values[j] / lengthFactor;
            if (full && _o.EarlyStopping == EarlyStopping.Immediate) score += Blocked;
            if (!_improvable) score += Blocked;
            if (!finished) score += Blocked;
            var tokens = finished ? Beams[flat[j] / vocab].Append((int)(flat[j] % vocab)).ToArray() : null;
            merged.Add((score, values[j], tokens, finished));
        }
        var best = merged.Select((m, i) => (m, i)).OrderByDescending(x => x.m.Score).ThenBy(x => x.i).Take(_k).Select(x => x.m).ToArray();
        Array.Copy(best, _slots, _k);

        Beams = beams;
        RunningScores = scores;
        if (order.Length < _k) parents = parents.Concat(Enumerable.Repeat(parents[0], _k - order.Length)).ToArray();

        // Stop rule: can the best open beam still beat the worst slot?
        var judgedAt = _o.EarlyStopping == EarlyStopping.Never && _o.LengthPenalty > 0 ? _maxNew : generated;
        var bestPossible = RunningScores[0] / (float)Math.Pow(judgedAt, _o.LengthPenalty);
        _improvable &= bestPossible > _slots.Min(s => s.Score);
        Over = allHit || !_improvable || (_o.EarlyStopping == EarlyStopping.Immediate && _slots.All(s => s.Finished));
        return parents;
    }

    /// <summary>Finished hypotheses, best first, at most <see cref="DecodingOptions.NBest"/>.</summary>
    public IReadOnlyList<Hypothesis> Results() => _slots.Where(s => s.Finished).Take(_o.NBest).Select(s =>
    {
        var ended = s.Tokens!.Length > 0 && s.Tokens[^1] == _eosId && !_o.IgnoreEos;
        return new Hypothesis(ended ? s.Tokens[..^1] : s.Tokens, s.LogProbability, s.Score, ended);
    }).ToArray();
}
