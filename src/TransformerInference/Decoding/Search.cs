using static TorchSharp.torch;

namespace TransformerInference.Decoding;

/// <summary>
/// One call's search (greedy, sampling or beam) over its rows of a decoder batch, advanced one step at a time by a
/// driver: <see cref="Generator"/> for a call decoded alone, <see cref="BatchScheduler"/> for calls sharing a batch.
/// A search only chooses tokens and says which of its rows continue (and from which parent row); it never sees the
/// model's layers or the cache, so several searches with different options can share one batch.
/// </summary>
internal abstract class Search : IDisposable
{
    protected Search(ISeq2SeqModel model, DecodingOptions options, int maxNew)
    {
        Options = options;
        MaxNew = maxNew;
        EosId = model.EosId;
        StartId = Generator.StartId(model, options);
        Processing = new LogitsProcessing(options, maxNew, model.EosId, StartId, model.TargetVocabSize, model.Device);
    }

    public DecodingOptions Options { get; }

    /// <summary>Most tokens generated per sequence (the cache positions this search needs).</summary>
    public int MaxNew { get; }

    protected int EosId { get; }
    protected int StartId { get; }
    protected LogitsProcessing Processing { get; }

    /// <summary>Steps taken so far.</summary>
    protected int StepIndex { get; set; }

    /// <summary>For each row the search starts with, the input (index into its sources) whose encoder output it reads.</summary>
    public abstract IReadOnlyList<int> InitialRows { get; }

    /// <summary>Rows this search occupies in the batch now; 0 once it is over.</summary>
    public abstract int Rows { get; }

    /// <summary>Appends the token each of its rows feeds to the decoder next, in row order.</summary>
    public abstract void Feed(List<long> tokens);

    /// <summary>Consumes this step's raw scores for its rows (<c>[Rows, vocab]</c> float32) and returns, for each row
    /// it keeps, the current row whose cache that row continues (in the new row order).</summary>
    public abstract IReadOnlyList<int> Advance(Tensor logits);

    /// <summary>Whether this step's tokens are just the best raw log-probability of each row (plain greedy, no
    /// processor changes a score): a driver may then choose them for many searches at once and call
    /// <see cref="Advance(ReadOnlySpan{long}, ReadOnlySpan{float})"/>.</summary>
    public virtual bool TakesArgmax => false;

    /// <summary>Like <see cref="Advance(Tensor)"/> when <see cref="TakesArgmax"/>: <paramref name="tokens"/> and
    /// <paramref name="logProbabilities"/> are each row's argmax of the log-softmax of its scores and that maximum.</summary>
    public virtual IReadOnlyList<int> Advance(ReadOnlySpan<long> tokens, ReadOnlySpan<float> logProbabilities) =>
        throw new NotSupportedException("This search chooses its own tokens.");

    /// <summary>Per input, its hypotheses best first.</summary>
    public abstract IReadOnlyList<IReadOnlyList<Hypothesis>> Results();

    /// <summary>The search for <paramref name="options"/> (already validated) over <paramref name="sources"/>.</summary>
    public static Search Create(ISeq2SeqModel model, IReadOnlyList<IReadOnlyList<int>> sources, DecodingOptions options, int maxNew,
        Action<int, int>? onToken) =>
        options.BeamSize > 1 ? new BeamSearch(model, sources.Count, options, maxNew) : new GreedySearch(model, sources, options, maxNew, onToken);

    public virtual void Dispose() => Processing.Dispose();
}
