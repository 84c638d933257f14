using System.Runtime.Intrinsics;
using TorchSharp;
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

    /// <summary>
    /// Each row's argmax of the log-softmax of <paramref name="logits"/> <c>[rows, vocab]</c> (the first index on ties;
    /// a row with a NaN or +inf gives index 0 and NaN, as LibTorch does) and that log-probability. CPU float32 scores are read in place on the host:
    /// <c>log p = (x − max) − log Σ exp(x − max)</c>, LibTorch's formula (the exp sum in float32 vector lanes), without
    /// the log-softmax tensor and two host copies; elsewhere LibTorch's log-softmax and max.
    /// </summary>
    internal static unsafe (long[] Tokens, float[] LogProbabilities) Best(Tensor logits)
    {
        if (logits.device_type != DeviceType.CPU || logits.dtype != ScalarType.Float32 || logits.dim() != 2 || !logits.is_contiguous())
        {
            var (best, index) = logits.log_softmax(-1).max(-1);
            return (index.cpu().data<long>().ToArray(), best.cpu().data<float>().ToArray());
        }
        long rows = logits.shape[0], vocab = logits.shape[1];
        var tokens = new long[rows];
        var logProbabilities = new float[rows];
        if (vocab == 0) return (tokens, logProbabilities);
        var data = (float*)Modeling.Kernels.PackedLinear.Pointer(logits);
        for (long r = 0; r < rows; r++)
        {
            var x = data + r * vocab;
            var (at, nan) = ArgMax(x, vocab);
            var max = x[at];
            // A NaN score, or +inf (inf − inf), makes the whole log-softmax row NaN; LibTorch's max then gives index 0.
            var undefined = nan || float.IsPositiveInfinity(max);
            tokens[r] = undefined ? 0 : at;
            logProbabilities[r] = undefined ? float.NaN : (x[at] - max) - MathF.Log(SumOfExp(x, vocab, max));
        }
        return (tokens, logProbabilities);
    }

    /// <summary>The first index of the largest of <paramref name="n"/> scores (as a scan keeping the first strictly
    /// larger one), and whether any is NaN: a vector pass for the largest value and NaNs, then one for its first index.</summary>
    private static unsafe (long At, bool NaN) ArgMax(float* x, long n)
    {
        long j = 0;
        var max = float.NegativeInfinity;
        var nan = false;
        if (Vector256.IsHardwareAccelerated && n >= Vector256<float>.Count)
        {
            var lanes = Vector256.Create(float.NegativeInfinity);
            var unordered = Vector256<float>.Zero;
            for (; j + Vector256<float>.Count <= n; j += Vector256<float>.Count)
            {
                var v = Vector256.Load(x + j);
                lanes = Vector256.Max(lanes, v);
                unordered |= ~Vector256.Equals(v, v);
            }
            nan = unordered != Vector256<float>.Zero;
            for (var l = 0; l < Vector256<float>.Count; l++) max = MathF.Max(max, lanes[l]);
        }
        for (; j < n; j++)
        {
            nan |= float.IsNaN(x[j]);
            max = MathF.Max(max, x[j]);
        }
        if (nan) return (0, true);
        // The first score equal to the largest (−0 and +0 compare equal, as they do in the scan).
        j = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var m = Vector256.Create(max);
            for (; j + Vector256<float>.Count <= n; j += Vector256<float>.Count)
            {
                var equal = Vector256.Equals(Vector256.Load(x + j), m).ExtractMostSignificantBits();
                if (equal != 0) return (j + System.Numerics.BitOperations.TrailingZeroCount(equal), false);
            }
        }
        for (; j < n; j++)
            if (x[j] == max) return (j, false);
        return (0, false);
    }

    /// <summary><c>Σ exp(x − max)</c> in float32: vector lanes, then the lanes and the tail.</summary>
    private static unsafe float SumOfExp(float* x, long n, float max)
    {
        long j = 0;
        var sum = 0f;
        if (Vector256.IsHardwareAccelerated)
        {
            var m = Vector256.Create(max);
            var lanes = Vector256<float>.Zero;
            for (; j + Vector256<float>.Count <= n; j += Vector256<float>.Count) lanes += Vector256.Exp(Vector256.Load(x + j) - m);
            sum = Vector256.Sum(lanes);
        }
        for (; j < n; j++) sum += MathF.Exp(x[j] - max);
        return sum;
    }

    /// <summary>Per input, its hypotheses best first.</summary>
    public abstract IReadOnlyList<IReadOnlyList<Hypothesis>> Results();

    /// <summary>The search for <paramref name="options"/> (already validated) over <paramref name="sources"/>.</summary>
    public static Search Create(ISeq2SeqModel model, IReadOnlyList<IReadOnlyList<int>> sources, DecodingOptions options, int maxNew,
        Action<int, int>? onToken) =>
        options.BeamSize > 1 ? new BeamSearch(model, sources.Count, options, maxNew) : new GreedySearch(model, sources, options, maxNew, onToken);

    public virtual void Dispose() => Processing.Dispose();
}
