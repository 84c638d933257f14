using System.Text.RegularExpressions;
using static TorchSharp.torch;

namespace TransformerInference.Loading;

/// <summary>
/// The two naming schemes of "pytorch-transformer" seed checkpoints, mapped onto our canonical names, and the
/// hyperparameters their tensor shapes reveal.
/// Seed author's scheme (ThinamXx/transformer-pytorch): attention linears with bias, encoder <c>feed_foward_block</c>
/// (sic), <c>linear1</c>/<c>linear2</c>, <c>residual_connection1.{k}</c>, norm <c>alpha</c>/<c>bias</c> of shape [1],
/// log-softmax projection. Upstream scheme (hkproj/pytorch-transformer, our canonical names): bias-free attention,
/// <c>linear_1</c>/<c>linear_2</c>, <c>residual_connections.{k}</c>, per-feature norms, raw logits.
/// </summary>
internal static class SeedCheckpoint
{
    private static readonly (string From, string To)[] AuthorRenames =
    {
        (".feed_foward_block.", ".feed_forward_block."),
        (".linear1.", ".linear_1."),
        (".linear2.", ".linear_2."),
        (".residual_connection1.", ".residual_connections."),
    };

    private static readonly Regex LayerIndex = new(@"^(encoder|decoder)\.layers\.(\d+)\.", RegexOptions.Compiled);

    /// <summary>True for the seed author's own scheme.</summary>
    public static bool IsAuthorScheme(IEnumerable<string> keys) =>
        keys.Any(k => k.Contains(".residual_connection1.") || k.Contains(".feed_foward_block.") || k.Contains(".linear1."));

    public static (TransformerConfig Config, Dictionary<string, Tensor> Tensors) Interpret(
        Dictionary<string, Tensor> raw, string path, ModelLoadOptions options, int heads)
    {
        var author = IsAuthorScheme(raw.Keys);
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (key, t) in raw)
        {
            var name = key;
            if (author) foreach (var (from, to) in AuthorRenames) name = name.Replace(from, to);
            if (!tensors.TryAdd(name, t))
                throw new CheckpointException($"Two tensors map to the same name '{name}'", path, key);
        }

        Tensor Need(string name) => tensors.TryGetValue(name, out var t) ? t
            : throw new CheckpointException("A tensor the seed architecture needs is missing", path, name);
        long Dim(string name, int dim, int rank)
        {
            var t = Need(name);
            if (t.dim() != rank)
                throw new CheckpointException($"Tensor has shape [{string.Join(", ", t.shape)}], expected {rank} dimensions", path, name);
            return t.shape[dim];
        }

        var dModel = Dim("src_embed.embedding.weight", 1, 2);
        var config = new TransformerConfig
        {
            SourceVocabSize = (int)Dim("src_embed.embedding.weight", 0, 2),
            TargetVocabSize = (int)Dim("tgt_embed.embedding.weight", 0, 2),
            DModel = (int)dModel,
            DFF = (int)Dim("encoder.layers.0.feed_forward_block.linear_1.weight", 0, 2),
            EncoderLayers = CountLayers(tensors.Keys, "encoder", path),
            DecoderLayers = CountLayers(tensors.Keys, "decoder", path),
            Heads = heads,
            MaxSourcePositions = (int)Dim("src_pos.pe", 1, 3),
            MaxTargetPositions = (int)Dim("tgt_pos.pe", 1, 3),
            Block = BlockKind.Serial,
            Norm = NormKind.Seed,
            NormEps = 1e-6,
            Positions = PositionKind.Sinusoidal,
            FeedForward = FeedForwardKind.Relu,
            FeedForwardBias = tensors.ContainsKey("encoder.layers.0.feed_forward_block.linear_1.bias"),
            AttentionBias = tensors.ContainsKey("encoder.layers.0.self_attention_block.w_q.bias"),
            EmbeddingScale = true,
            ProjectionBias = tensors.ContainsKey("projection_layer.proj.bias"),
            OutputLogSoftmax = author,
            UnkId = options.SpecialIds.Unk,
            PadId = options.SpecialIds.Pad,
            SosId = options.SpecialIds.Sos,
            EosId = options.SpecialIds.Eos,
        };
        try
        {
            config.Validate();
        }
        catch (ArgumentException e) when (e.ParamName == nameof(TransformerConfig.Heads))
        {
            throw new ArgumentException($"{e.Message} (checkpoint '{path}', d_model from tensor 'src_embed.embedding.weight')", e.ParamName, e);
        }
        catch (ArgumentException e)
        {
            throw new CheckpointException($"The checkpoint does not fit the options: {e.Message}", path, inner: e);
        }

        // The author's norms hold one scalar alpha and bias, broadcast over the features: widen them.
        foreach (var name in tensors.Keys.Where(IsNormParameter).ToList())
        {
            var t = tensors[name];
            if (t.shape.SequenceEqual(new[] { 1L }))
            {
                tensors[name] = t.expand(dModel).contiguous().DetachFromDisposeScope();
                t.Dispose();
            }
        }
        return (config, tensors);
    }

    private static bool IsNormParameter(string name) =>
        (name.EndsWith(".norm.alpha", StringComparison.Ordinal) || name.EndsWith(".norm.bias", StringComparison.Ordinal)) ||
        name is "encoder.norm.alpha" or "encoder.norm.bias" or "decoder.norm.alpha" or "decoder.norm.bias";

    private static int CountLayers(IEnumerable<string> keys, string stack, string path)
    {
        var indices = keys.Select(k => LayerIndex.Match(k)).Where(m => m.Success && m.Groups[1].Value == stack)
            .Select(m => int.Parse(m.Groups[2].Value)).Distinct().OrderBy(i => i).ToList();
        if (indices.Count == 0) throw new CheckpointException($"The checkpoint has no {stack} layers", path, $"{stack}.layers.0");
        for (var i = 0; i < indices.Count; i++)
            if (indices[i] != i) throw new CheckpointException($"The {stack} layers are not numbered 0..{indices.Count - 1}", path, $"{stack}.layers.{i}");
        return indices.Count;
    }
}
