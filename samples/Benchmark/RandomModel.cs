using TorchSharp;
using TransformerInference.Loading;
using TransformerInference.Modeling;
using static TorchSharp.torch;

namespace TransformerInference.Samples.Benchmark;

/// <summary>
/// Seed-architecture models with random weights, so that the benchmark needs no checkpoint file. Speed does not
/// depend on the weight values, only on shapes and dtype; the values are kept small so activations stay finite.
/// </summary>
internal static class RandomModel
{
    /// <summary>The "base" seed model (d_model 512, 6+6 layers, 8 heads, d_ff 2048) or, with <paramref name="small"/>,
    /// a quick-run model (d_model 256, 3+3 layers, d_ff 1024). Vocabularies 8000, 128 positions, seed norm,
    /// sinusoidal positions, ReLU feed-forward.</summary>
    public static TransformerConfig Config(bool small, BlockKind block = BlockKind.Serial, int? kvHeads = null) => new()
    {
        SourceVocabSize = 8000,
        TargetVocabSize = 8000,
        DModel = small ? 256 : 512,
        DFF = small ? 1024 : 2048,
        EncoderLayers = small ? 3 : 6,
        DecoderLayers = small ? 3 : 6,
        Heads = 8,
        KvHeads = kvHeads,
        MaxSourcePositions = 128,
        MaxTargetPositions = 128,
        Block = block,
        Norm = NormKind.Seed,
        Positions = PositionKind.Sinusoidal,
        FeedForward = FeedForwardKind.Relu,
    };

    /// <summary>Builds the model from a state dict of random tensors in canonical naming (fixed seed: every run and
    /// every variant gets the same numbers where shapes agree).</summary>
    public static TransformerModel Create(TransformerConfig c, ScalarType dtype, long seed = 1234,
        WeightQuantization quantization = WeightQuantization.None) =>
        FromWeights(c, Weights(c, seed), dtype, quantization);

    /// <summary>The names <see cref="Shape"/> knows.</summary>
    public static readonly string[] ShapeNames = { "base", "small", "opus-mt", "nllb-600m" };

    /// <summary>A named shape: <c>base</c>/<c>small</c> (<see cref="Config"/>), <c>opus-mt</c> (Marian en→de: d_model
    /// 512, 6+6, d_ff 2048, vocab 58,101) or <c>nllb-600m</c> (NLLB-200-distilled-600M: d_model 1024, 12+12, 16 heads,
    /// d_ff 4096, vocab 256,206, one embedding table shared by encoder, decoder and projection, as in NLLB). Only the sizes
    /// (and NLLB's table sharing) follow the real models; the layers are the seed's.</summary>
    public static TransformerConfig Shape(string name) => name switch
    {
        "base" => Config(small: false),
        "small" => Config(small: true),
        "opus-mt" => Config(small: false) with { SourceVocabSize = 58101, TargetVocabSize = 58101 },
        // NLLB shares one embedding table between encoder, decoder and the (bias-free) output projection, as here:
        // three separate 256,206 × 1024 tables would be 2 GB more to build and hold than the real model.
        "nllb-600m" => Config(small: false) with
        {
            SourceVocabSize = 256206, TargetVocabSize = 256206, DModel = 1024, DFF = 4096, EncoderLayers = 12,
            DecoderLayers = 12, Heads = 16, SharedEmbeddings = true, TieOutputProjection = true, ProjectionBias = false,
        },
        _ => throw new ArgumentException($"Unknown shape '{name}' ({string.Join(", ", ShapeNames)})."),
    };

    /// <summary>The random float32 state dict in canonical naming (fixed seed), for callers that also need the
    /// tensors themselves (the <c>pytorch</c> mode saves them for Python); the caller owns them until
    /// <see cref="FromWeights"/> hands them to a model.</summary>
    public static Dictionary<string, Tensor> Weights(TransformerConfig c, long seed = 1234)
    {
        using var _ = inference_mode();
        manual_seed(seed);
        using var scope = NewDisposeScope();
        // The scope frees the temporaries (randn before scaling, the position arithmetic); the weights leave it.
        var weights = StateDict(c);
        foreach (var tensor in weights.Values) tensor.DetachFromDisposeScope();
        return weights;
    }

    /// <summary>Builds the model from <paramref name="weights"/>; the model takes ownership of them (in float32 it
    /// uses these very tensors, so dispose the model, not the tensors).</summary>
    public static TransformerModel FromWeights(TransformerConfig c, Dictionary<string, Tensor> weights, ScalarType dtype,
        WeightQuantization quantization = WeightQuantization.None) =>
        ModelLoader.FromStateDict(c, weights, new ModelLoadOptions { DType = dtype, Quantization = quantization }, "random weights");

    private static Dictionary<string, Tensor> StateDict(TransformerConfig c)
    {
        var t = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        long d = c.DModel, kv = (long)c.EffectiveKvHeads * c.HeadDim, q = (long)c.Heads * c.HeadDim;

        void Matrix(string name, long rows, long cols) => t[name] = randn(rows, cols) * 0.02;
        void Zeros(string name, long n) => t[name] = zeros(n);
        void Norm(string prefix)
        {
            t[prefix + ".alpha"] = ones(d);
            t[prefix + ".bias"] = zeros(d);
        }
        void Attention(string prefix)
        {
            Matrix(prefix + ".w_q.weight", q, d);
            Matrix(prefix + ".w_k.weight", kv, d);
            Matrix(prefix + ".w_v.weight", kv, d);
            Matrix(prefix + ".w_o.weight", d, q);
        }
        void FeedForward(string prefix)
        {
            Matrix(prefix + ".linear_1.weight", c.DFF, d);
            Zeros(prefix + ".linear_1.bias", c.DFF);
            Matrix(prefix + ".linear_2.weight", d, c.DFF);
            Zeros(prefix + ".linear_2.bias", d);
        }
        void Stack(string side, int layers, bool decoder)
        {
            for (var i = 0; i < layers; i++)
            {
                var p = $"{side}.layers.{i}";
                Attention(p + ".self_attention_block");
                FeedForward(p + ".feed_forward_block");
                if (decoder) Attention(p + ".cross_attention_block");
                if (c.Block == BlockKind.Serial)
                {
                    // Serial: one pre-norm per residual sub-block (self, [cross,] feed-forward).
                    for (var r = 0; r < (decoder ? 3 : 2); r++) Norm($"{p}.residual_connections.{r}.norm");
                }
                else
                {
                    // Parallel: self-attention and feed-forward share one norm; cross-attention keeps its own.
                    Norm(p + ".norm");
                    if (decoder) Norm(p + ".cross_attention_norm");
                }
            }
            Norm(side + ".norm");
        }

        if (!c.SharedEmbeddings) t["src_embed.embedding.weight"] = randn(c.SourceVocabSize, d) * 0.02;
        t["tgt_embed.embedding.weight"] = randn(c.TargetVocabSize, d) * 0.02;
        t["src_pos.pe"] = Sinusoidal(c.MaxSourcePositions, d);
        t["tgt_pos.pe"] = Sinusoidal(c.MaxTargetPositions, d);
        Stack("encoder", c.EncoderLayers, decoder: false);
        Stack("decoder", c.DecoderLayers, decoder: true);
        if (!c.TieOutputProjection) Matrix("projection_layer.proj.weight", c.TargetVocabSize, d);
        if (c.ProjectionBias) Zeros("projection_layer.proj.bias", c.TargetVocabSize);
        return t;
    }

    /// <summary>The seed's table <c>[1, P, D]</c>: sin on even columns, cos on odd ones.</summary>
    private static Tensor Sinusoidal(long positions, long d)
    {
        var position = arange(positions, dtype: ScalarType.Float32).unsqueeze(1);
        var divTerm = exp(arange(0, d, 2, dtype: ScalarType.Float32) * (-Math.Log(10000.0) / d));
        var pe = zeros(positions, d);
        pe[TensorIndex.Colon, TensorIndex.Slice(0, null, 2)] = sin(position * divTerm);
        pe[TensorIndex.Colon, TensorIndex.Slice(1, null, 2)] = cos(position * divTerm);
        return pe.unsqueeze(0);
    }

    /// <summary>A framed source <c>[SOS] ids [EOS]</c> of exactly <paramref name="length"/> tokens, ids drawn from
    /// the ordinary (non-special) vocabulary with a fixed seed.</summary>
    public static int[] Source(TransformerConfig c, int length, int seed = 7)
    {
        var random = new Random(seed);
        var ids = new int[length];
        ids[0] = c.SosId;
        for (var i = 1; i < length - 1; i++) ids[i] = random.Next(4, c.SourceVocabSize);
        ids[^1] = c.EosId;
        return ids;
    }
}
