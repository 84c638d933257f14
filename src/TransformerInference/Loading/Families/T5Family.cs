using System.Text.Json.Serialization;

namespace TransformerInference.Loading.Families;

/// <summary>config.json of T5, Flan-T5 and mT5: the fields we read (absent ones take Hugging Face's defaults).</summary>
internal sealed record T5ConfigJson
{
    [JsonPropertyName("model_type")] public required string ModelType { get; init; }
    [JsonPropertyName("d_model")] public required int DModel { get; init; }
    [JsonPropertyName("d_kv")] public required int DKv { get; init; }
    [JsonPropertyName("d_ff")] public required int DFF { get; init; }
    [JsonPropertyName("num_layers")] public required int Layers { get; init; }
    [JsonPropertyName("num_decoder_layers")] public int? DecoderLayers { get; init; }
    [JsonPropertyName("num_heads")] public required int Heads { get; init; }
    [JsonPropertyName("vocab_size")] public required int VocabSize { get; init; }
    [JsonPropertyName("relative_attention_num_buckets")] public int? Buckets { get; init; }
    [JsonPropertyName("relative_attention_max_distance")] public int? MaxDistance { get; init; }
    [JsonPropertyName("layer_norm_epsilon")] public double? NormEps { get; init; }
    [JsonPropertyName("feed_forward_proj")] public string? FeedForwardProj { get; init; }
    [JsonPropertyName("tie_word_embeddings")] public bool? TieWordEmbeddings { get; init; }
    [JsonPropertyName("n_positions")] public int? Positions { get; init; }
    [JsonPropertyName("pad_token_id")] public int? PadId { get; init; }
    [JsonPropertyName("eos_token_id")] public int? EosId { get; init; }
    [JsonPropertyName("decoder_start_token_id")] public int? DecoderStartId { get; init; }
}

/// <summary>
/// T5, Flan-T5 / T5 v1.1 and mT5 (<c>t5</c>, <c>mt5</c>): pre-norm RMS norms without bias, relative position buckets
/// (held by block 0 of each stack), no attention scaling, <c>d_kv</c> heads, <c>relu</c> or <c>gated-gelu</c>
/// feed-forward, no biases, unscaled shared embeddings, output tied with d_model^-0.5 or a separate <c>lm_head</c>,
/// decoder start = pad.
/// </summary>
internal sealed class T5Family : ModelFamily
{
    /// <summary>T5 has no position table; a sequence longer than this is refused (the cache is sized by it).</summary>
    private const int DefaultMaxPositions = 512;

    public override IReadOnlyList<string> ModelTypes { get; } = new[] { "t5", "mt5" };

    public override TransformerConfig ReadConfig(string path)
    {
        var j = Read<T5ConfigJson>(path);
        var proj = j.FeedForwardProj ?? "relu";
        var ffn = proj switch
        {
            "relu" => FeedForwardKind.Relu,
            "gated-gelu" => FeedForwardKind.GatedGelu,
            _ => throw new CheckpointException($"config.json feed_forward_proj \"{proj}\" is not supported (relu, gated-gelu)", path),
        };
        // MT5Config's default is an untied lm_head; T5Config's a tied one.
        var tied = j.TieWordEmbeddings ?? j.ModelType != "mt5";
        var pad = j.PadId ?? 0;
        var decoderLayers = j.DecoderLayers ?? j.Layers;
        var maxPositions = Math.Max(j.Positions ?? DefaultMaxPositions, DefaultMaxPositions);
        return Checked(new TransformerConfig
        {
            SourceVocabSize = j.VocabSize,
            TargetVocabSize = j.VocabSize,
            DModel = j.DModel,
            DFF = j.DFF,
            EncoderLayers = j.Layers,
            DecoderLayers = decoderLayers,
            Heads = j.Heads,
            Encoder = new StackConfig { Layers = j.Layers, Heads = j.Heads, DFF = j.DFF, HeadDim = j.DKv },
            Decoder = new StackConfig { Layers = decoderLayers, Heads = j.Heads, DFF = j.DFF, HeadDim = j.DKv },
            MaxSourcePositions = maxPositions,
            MaxTargetPositions = maxPositions,
            Block = BlockKind.Serial,
            NormPlacement = NormPlacement.Pre,
            FinalNorms = true,
            Norm = NormKind.RmsNorm,
            NormEps = j.NormEps ?? 1e-6,
            Positions = PositionKind.RelativeBuckets,
            RelativeBuckets = j.Buckets ?? 32,
            RelativeMaxDistance = j.MaxDistance ?? 128,
            AttentionScaling = false,
            FeedForward = ffn,
            FeedForwardBias = false,
            AttentionBias = false,
            EmbeddingScale = false,
            SharedEmbeddings = true,
            TieOutputProjection = tied,
            OutputScale = tied ? Math.Pow(j.DModel, -0.5) : 1.0,
            ProjectionBias = false,
            UnkId = 2, // T5 SentencePiece models: <pad>=0, </s>=1, <unk>=2
            PadId = pad,
            SosId = j.DecoderStartId ?? pad,
            EosId = j.EosId ?? 1,
        }, path);
    }

    public override IReadOnlyDictionary<string, string> TensorNames(TransformerConfig c)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["tgt_embed.embedding.weight"] = "shared.weight",
            ["projection_layer.proj.weight"] = "lm_head.weight",
        };
        var gated = c.FeedForward == FeedForwardKind.GatedGelu;
        foreach (var (side, layers) in new[] { ("encoder", c.EncoderLayers), ("decoder", c.DecoderLayers) })
        {
            var decoder = side == "decoder";
            for (var i = 0; i < layers; i++)
            {
                string ours = $"{side}.layers.{i}", theirs = $"{side}.block.{i}.layer";
                foreach (var p in new[] { "q", "k", "v", "o" })
                {
                    map[$"{ours}.self_attention_block.w_{p}.weight"] = $"{theirs}.0.SelfAttention.{p}.weight";
                    if (decoder) map[$"{ours}.cross_attention_block.w_{p}.weight"] = $"{theirs}.1.EncDecAttention.{p}.weight";
                }
                map[$"{ours}.residual_connections.0.norm.weight"] = $"{theirs}.0.layer_norm.weight";
                if (decoder) map[$"{ours}.residual_connections.1.norm.weight"] = $"{theirs}.1.layer_norm.weight";
                var ffn = decoder ? 2 : 1;
                map[$"{ours}.residual_connections.{ffn}.norm.weight"] = $"{theirs}.{ffn}.layer_norm.weight";
                var dense = $"{theirs}.{ffn}.DenseReluDense";
                if (gated)
                {
                    map[$"{ours}.feed_forward_block.w1.weight"] = dense + ".wi_0.weight";
                    map[$"{ours}.feed_forward_block.w3.weight"] = dense + ".wi_1.weight";
                    map[$"{ours}.feed_forward_block.w2.weight"] = dense + ".wo.weight";
                }
                else
                {
                    map[$"{ours}.feed_forward_block.linear_1.weight"] = dense + ".wi.weight";
                    map[$"{ours}.feed_forward_block.linear_2.weight"] = dense + ".wo.weight";
                }
            }
            map[$"{side}.layers.0.self_attention_block.relative_bias.weight"] = $"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight";
            map[$"{side}.norm.weight"] = $"{side}.final_layer_norm.weight";
        }
        return map;
    }

    public override IReadOnlyList<(string Alias, string Primary)> TiedAliases(TransformerConfig c)
    {
        var aliases = new List<(string, string)>
        {
            ("decoder.embed_tokens.weight", "shared.weight"),
            ("encoder.embed_tokens.weight", "shared.weight"),
        };
        if (c.TieOutputProjection) aliases.Add(("lm_head.weight", "shared.weight"));
        return aliases;
    }

    // Old converted checkpoints store a relative bias in the decoder's first cross-attention; the modeling code never reads it.
    public override bool IsIgnored(string name) => name == "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight";
}
