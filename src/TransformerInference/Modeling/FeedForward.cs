using TorchSharp;
using TransformerInference.Loading;
using TransformerInference.Modeling.Kernels;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace TransformerInference.Modeling;

/// <summary>
/// The position-wise feed-forward network. For SwiGLU, w1 and w3 are stored stacked as one input matrix so one
/// product computes both.
/// </summary>
internal sealed class FeedForward : IDisposable
{
    private readonly FeedForwardKind _kind;
    private readonly LinearWeight _in, _out;

    public FeedForward(WeightSet weights, string prefix, TransformerConfig config)
    {
        _kind = config.FeedForward;
        _in = weights.Linear(ReadInput(weights, prefix, config));
        _out = weights.Linear(ReadOutput(weights, prefix, config));
    }

    /// <summary>Width of the input projection's output (2·d_ff for SwiGLU).</summary>
    public static int InputWidth(TransformerConfig config) =>
        IsGated(config.FeedForward) ? 2 * config.DFF : config.DFF;

    /// <summary>Gated kinds read w1, w3 (stacked) and w2.</summary>
    public static bool IsGated(FeedForwardKind kind) => kind is FeedForwardKind.SwiGlu or FeedForwardKind.GatedGelu;

    /// <summary>Reads the input projection ([w1; w3] for SwiGLU, linear_1 otherwise).</summary>
    public static (Tensor Weight, Tensor? Bias) ReadInput(WeightSet w, string prefix, TransformerConfig c)
    {
        var bias = c.FeedForwardBias;
        if (!IsGated(c.FeedForward))
            return (w.Take(prefix + ".linear_1.weight", c.DFF, c.DModel), w.TakeIf(bias, prefix + ".linear_1.bias", c.DFF));
        using var w1 = w.Take(prefix + ".w1.weight", c.DFF, c.DModel);
        using var w3 = w.Take(prefix + ".w3.weight", c.DFF, c.DModel);
        var weight = w.Made(cat(new[] { w1, w3 }, 0));
        if (!bias) return (weight, null);
        using var b1 = w.Take(prefix + ".w1.bias", c.DFF);
        using var b3 = w.Take(prefix + ".w3.bias", c.DFF);
        return (weight, w.Made(cat(new[] { b1, b3 }, 0)));
    }

    /// <summary>Reads the output projection (linear_2 or w2).</summary>
    public static (Tensor Weight, Tensor? Bias) ReadOutput(WeightSet w, string prefix, TransformerConfig c)
    {
        var name = prefix + (IsGated(c.FeedForward) ? ".w2" : ".linear_2");
        return (w.Take(name + ".weight", c.DModel, c.DFF), w.TakeIf(c.FeedForwardBias, name + ".bias", c.DModel));
    }

    /// <summary>The hidden activation from the input projection's output.</summary>
    public static Tensor Activate(FeedForwardKind kind, Tensor pre)
    {
        switch (kind)
        {
            case FeedForwardKind.Relu: return F.relu(pre);
            case FeedForwardKind.Gelu: return F.gelu(pre); // exact erf form, as the reference
            case FeedForwardKind.Silu: return F.silu(pre);
            case FeedForwardKind.GatedGelu:
                var parts = pre.chunk(2, -1);
                return GeluTanh(parts[0]) * parts[1];
            default:
                var halves = pre.chunk(2, -1);
                return F.silu(halves[0]) * halves[1];
        }
    }

    /// <summary>Hugging Face's <c>gelu_new</c>: <c>0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³)))</c>, with rooted
    /// Scalars (see <see cref="Held"/>).</summary>
    private static Tensor GeluTanh(Tensor x) =>
        x.mul(GeluHalf).mul(tanh(Held.Add(x, x.pow(GeluCube).mul(GeluCoefficient)).mul(GeluRoot)).add(GeluOne, Held.One));

    private static readonly Scalar GeluHalf = 0.5.ToScalar(), GeluCube = 3.ToScalar(), GeluCoefficient = 0.044715.ToScalar(),
        GeluRoot = Math.Sqrt(2.0 / Math.PI).ToScalar(), GeluOne = 1.0.ToScalar();

    /// <summary>Whether <see cref="Step"/> can run: our CPU kernels, and an activation it computes (ReLU, SiLU, SwiGLU).</summary>
    internal bool RawSteps => _in is PackedLinear && _out is PackedLinear
        && _kind is FeedForwardKind.Relu or FeedForwardKind.Silu or FeedForwardKind.SwiGlu;

    /// <summary>Width of the input projection's rows (the scratch <see cref="Step"/> needs per row).</summary>
    internal long HiddenWidth => _in.OutFeatures;

    /// <summary>The block on raw rows <paramref name="x"/> [B, d_model] into <paramref name="output"/>, with
    /// <paramref name="hidden"/> as scratch. The activations are LibTorch's formulas: <c>max(x, 0)</c>,
    /// <c>x / (1 + exp(−x))</c>, and for SwiGLU <c>silu(first half) · second half</c>.</summary>
    internal unsafe void Step(float* x, long batch, float* hidden, float* output)
    {
        ((PackedLinear)_in).Run(x, hidden, batch);
        var width = HiddenWidth;
        var n = batch * width;
        switch (_kind)
        {
            case FeedForwardKind.Relu:
                StepKernels.Relu(hidden, n);
                break;
            case FeedForwardKind.Silu:
                for (long i = 0; i < n; i++) hidden[i] = Silu(hidden[i]);
                break;
            case FeedForwardKind.SwiGlu:
                // Row r's half-width result goes to r·half: before its own inputs, after every earlier row's.
                var half = width / 2;
                for (long r = 0; r < batch; r++)
                    for (long j = 0; j < half; j++)
                        hidden[r * half + j] = Silu(hidden[r * width + j]) * hidden[r * width + half + j];
                break;
            default:
                throw new InvalidOperationException($"No raw step for the {_kind} feed-forward (RawSteps should have refused it).");
        }
        ((PackedLinear)_out).Run(hidden, output, batch);
    }

    private static float Silu(float x) => x / (1 + MathF.Exp(-x));

    public Tensor Forward(Tensor x) =>
        _out.Forward(Activate(_kind, _in.Forward(x)));

    public void Dispose()
    {
        _in.Dispose();
        _out.Dispose();
    }
}
