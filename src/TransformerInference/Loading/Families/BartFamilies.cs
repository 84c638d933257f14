using System.Text.Json.Serialization;

namespace TransformerInference.Loading.Families;

/// <summary>config.json of the BART-style translation families (Marian, M2M100 / NLLB, mBART): the fields we read.</summary>
internal sealed record BartConfigJson
{
    [JsonPropertyName("model_type")] public required string ModelType { get; init; }
    [JsonPropertyName("d_model")] public required int DModel { get; init; }
    [JsonPropertyName("encoder_layers")] public required int EncoderLayers { get; init; }
    [JsonPropertyName("decoder_layers")] public required int DecoderLayers { get; init; }
    [JsonPropertyName("encoder_attention_heads")] public required int EncoderHeads { get; init; }
    [JsonPropertyName("decoder_attention_heads")] public required int DecoderHeads { get; init; }
    [JsonPropertyName("encoder_ffn_dim")] public required int EncoderFfn { get; init; }
    [JsonPropertyName("decoder_ffn_dim")] public required int DecoderFfn { get; init; }
    [JsonPropertyName("vocab_size")] public required int VocabSize { get; init; }
    [JsonPropertyName("decoder_vocab_size")] public int? DecoderVocabSize { get; init; }
    [JsonPropertyName("max_position_embeddings")] public required int MaxPositions { get; init; }
    [JsonPropertyName("activation_function")] public string? Activation { get; init; }
    [JsonPropertyName("scale_embedding")] public bool? ScaleEmbedding { get; init; }
    [JsonPropertyName("pad_token_id")] public required int PadId { get; init; }
    [JsonPropertyName("eos_token_id")] public required int EosId { get; init; }
    [JsonPropertyName("decoder_start_token_id")] public int? DecoderStartId { get; init; }
    [JsonPropertyName("share_encoder_decoder_embeddings")] public bool? ShareEmbeddings { get; init; }
    [JsonPropertyName("tie_word_embeddings")] public bool? TieWordEmbeddings { get; init; }
}

/// <summary>What the BART-style families share: the layer names (<c>self_attn</c>, <c>encoder_attn</c>, <c>fc1</c>,
/// <c>fc2</c>, their norms), per-stack shapes, and the config fields common to all.</summary>
internal abstract class BartFamily : ModelFamily
{
    /// <summary>The common part of the config; a family sets its own switches with <c>with { ... }</c>.</summary>
    protected static TransformerConfig Common(BartConfigJson j, string path, string defaultActivation)
    {
        var activation = j.Activation ?? defaultActivation;
        var ffn = activation switch
        {
            "relu" => FeedForwardKind.Relu,
            "gelu" => FeedForwardKind.Gelu,
            "swish" or "silu" => FeedForwardKind.Silu,
            _ => throw new CheckpointException($"config.json activation_function \"{activation}\" is not supported (relu, gelu, swish, silu)", path),
        };
        return new TransformerConfig
        {
            SourceVocabSize = j.VocabSize,
            TargetVocabSize = j.VocabSize,
            DModel = j.DModel,
            DFF = j.DecoderFfn,
            EncoderLayers = j.EncoderLayers,
            DecoderLayers = j.DecoderLayers,
            Heads = j.DecoderHeads,
            Encoder = new StackConfig { Layers = j.EncoderLayers, Heads = j.EncoderHeads, DFF = j.EncoderFfn },
            Decoder = new StackConfig { Layers = j.DecoderLayers, Heads = j.DecoderHeads, DFF = j.DecoderFfn },
            MaxSourcePositions = j.MaxPositions,
            MaxTargetPositions = j.MaxPositions,
            Block = BlockKind.Serial,
            Norm = NormKind.LayerNorm,
            NormEps = 1e-5,
            FeedForward = ffn,
            FeedForwardBias = true,
            AttentionBias = true,
            EmbeddingScale = j.ScaleEmbedding ?? false,
            SharedEmbeddings = true,
            TieOutputProjection = j.TieWordEmbeddings ?? true,
            UnkId = 3,
            PadId = j.PadId,
            SosId = j.DecoderStartId ?? j.EosId,
            EosId = j.EosId,
        };
    }

    public override IReadOnlyDictionary<string, string> TensorNames(TransformerConfig c)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["projection_layer.proj.bias"] = "final_logits_bias",
            ["projection_layer.proj.weight"] = "lm_head.weight",
        };
        if (c.SharedEmbeddings) map["tgt_embed.embedding.weight"] = "model.shared.weight";
        else
        {
            map["src_embed.embedding.weight"] = "model.encoder.embed_tokens.weight";
            map["tgt_embed.embedding.weight"] = "model.decoder.embed_tokens.weight";
        }
        void Pair(string ours, string theirs)
        {
            map[ours + ".weight"] = theirs + ".weight";
            map[ours + ".bias"] = theirs + ".bias";
        }
        void Attention(string ours, string theirs)
        {
            Pair(ours + ".w_q", theirs + ".q_proj");
            Pair(ours + ".w_k", theirs + ".k_proj");
            Pair(ours + ".w_v", theirs + ".v_proj");
            Pair(ours + ".w_o", theirs + ".out_proj");
        }
        foreach (var (side, layers) in new[] { ("encoder", c.EncoderLayers), ("decoder", c.DecoderLayers) })
        {
            var decoder = side == "decoder";
            for (var i = 0; i < layers; i++)
            {
                string ours = $"{side}.layers.{i}", theirs = $"model.{side}.layers.{i}";
                Attention(ours + ".self_attention_block", theirs + ".self_attn");
                Pair(ours + ".residual_connections.0.norm", theirs + ".self_attn_layer_norm");
                if (decoder)
                {
                    Attention(ours + ".cross_attention_block", theirs + ".encoder_attn");
                    Pair(ours + ".residual_connections.1.norm", theirs + ".encoder_attn_layer_norm");
                }
                Pair(ours + $".residual_connections.{(decoder ? 2 : 1)}.norm", theirs + ".final_layer_norm");
                Pair(ours + ".feed_forward_block.linear_1", theirs + ".fc1");
                Pair(ours + ".feed_forward_block.linear_2", theirs + ".fc2");
            }
            Pair($"{side}.norm", $"model.{side}.layer_norm");
            Pair($"{side}.embed_norm", $"model.{side}.layernorm_embedding");
            map[(decoder ? "tgt" : "src") + "_pos.embedding.weight"] = $"model.{side}.embed_positions.weight";
        }
        return map;
    }

    public override IReadOnlyList<(string Alias, string Primary)> TiedAliases(TransformerConfig c)
    {
        var aliases = new List<(string, string)>();
        if (c.SharedEmbeddings)
        {
            aliases.Add(("model.decoder.embed_tokens.weight", "model.shared.weight"));
            aliases.Add(("model.encoder.embed_tokens.weight", "model.shared.weight"));
            if (c.TieOutputProjection) aliases.Add(("lm_head.weight", "model.shared.weight"));
        }
        else if (c.TieOutputProjection) aliases.Add(("lm_head.weight", "model.decoder.embed_tokens.weight"));
        return aliases;
    }
}

/// <summary>Marian (<c>opus-mt-*</c>): post-norm, no final norms, Marian sinusoids, <c>swish</c> by default,
/// <c>final_logits_bias</c>, decoder start = pad; one shared table, or (<c>share_encoder_decoder_embeddings</c> false)
/// separate encoder and decoder tables with the output tied to the decoder's.</summary>
internal sealed class MarianFamily : BartFamily
{
    public override IReadOnlyList<string> ModelTypes { get; } = new[] { "marian" };

    public override TransformerConfig ReadConfig(string path)
    {
        var j = Read<BartConfigJson>(path);
        var shared = j.ShareEmbeddings ?? true;
        return Checked(Common(j, path, "swish") with
        {
            TargetVocabSize = j.DecoderVocabSize ?? j.VocabSize,
            NormPlacement = NormPlacement.Post,
            FinalNorms = false,
            Positions = PositionKind.SinusoidalHalves,
            PositionOffset = 0,
            SharedEmbeddings = shared,
            ProjectionBias = true,
            UnkId = 1, // Marian vocabularies: </s>=0, <unk>=1
            SosId = j.DecoderStartId ?? j.PadId,
        }, path);
    }

    // Sinusoids are computed; old checkpoints store them.
    public override bool IsIgnored(string name) => name.Contains(".embed_positions.", StringComparison.Ordinal);
}

/// <summary>M2M100 and NLLB (<c>m2m_100</c>): pre-norm with final norms, fairseq sinusoids offset by padding id + 1,
/// tied output without bias, decoder start = eos.</summary>
internal sealed class M2M100Family : BartFamily
{
    public override IReadOnlyList<string> ModelTypes { get; } = new[] { "m2m_100" };

    public override TransformerConfig ReadConfig(string path)
    {
        var j = Read<BartConfigJson>(path);
        return Checked(Common(j, path, "relu") with
        {
            NormPlacement = NormPlacement.Pre,
            FinalNorms = true,
            Positions = PositionKind.Fairseq,
            PositionOffset = j.PadId + 1,
            ProjectionBias = false,
        }, path);
    }

    public override bool IsIgnored(string name) => name.Contains(".embed_positions.", StringComparison.Ordinal);
}

/// <summary>mBART / mBART-50 (<c>mbart</c>): pre-norm, learned positions offset by 2, <c>layernorm_embedding</c> after
/// embeddings and positions, final norms, <c>final_logits_bias</c>, <c>gelu</c>, decoder start = eos.</summary>
internal sealed class MBartFamily : BartFamily
{
    public override IReadOnlyList<string> ModelTypes { get; } = new[] { "mbart" };

    public override TransformerConfig ReadConfig(string path)
    {
        var j = Read<BartConfigJson>(path);
        return Checked(Common(j, path, "gelu") with
        {
            NormPlacement = NormPlacement.Pre,
            FinalNorms = true,
            Positions = PositionKind.Learned,
            PositionOffset = 2, // MBartLearnedPositionalEmbedding: position p reads row p + 2
            EmbeddingNorm = true,
            ProjectionBias = true,
        }, path);
    }
}
