using System.Text.Json;

namespace TransformerInference.Loading;

/// <summary>Reads the <c>config.json</c> of a model folder (<c>model_type</c> "seed_transformer").</summary>
internal static class FolderConfig
{
    public static TransformerConfig Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"The model folder has no config.json: '{path}'.", path);
        JsonElement root;
        using (var doc = UntrustedJson.ParseFile(path, (message, e) => new CheckpointException($"config.json: {message}", path, inner: e)))
            root = doc.RootElement.Clone();
        if (root.ValueKind != JsonValueKind.Object) throw new CheckpointException("config.json must hold an object", path);

        JsonElement Field(string name) => root.TryGetProperty(name, out var v) ? v
            : throw new CheckpointException($"config.json lacks the field '{name}'", path);
        // TryGet* throw (rather than return false) on non-numbers, so check the kind first.
        int Int(string name) => Field(name) is { ValueKind: JsonValueKind.Number } f && f.TryGetInt32(out var v) ? v : throw Bad(name, "an integer");
        double Num(string name) => Field(name) is { ValueKind: JsonValueKind.Number } f && f.TryGetDouble(out var v) ? v : throw Bad(name, "a number");
        bool Bool(string name) => Field(name).ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Bad(name, "true or false"),
        };
        string Str(string name) => Field(name).ValueKind == JsonValueKind.String ? Field(name).GetString()! : throw Bad(name, "a string");
        T Enum<T>(string name, params (string Value, T Kind)[] choices)
        {
            var s = Str(name);
            foreach (var (value, kind) in choices) if (s == value) return kind;
            throw new CheckpointException($"config.json field '{name}' is \"{s}\"; supported: {string.Join(", ", choices.Select(c => c.Value))}", path);
        }
        CheckpointException Bad(string name, string what) =>
            new($"config.json field '{name}' must be {what}, got {Field(name).GetRawText()}", path);

        var modelType = Str("model_type");
        if (modelType != "seed_transformer")
            throw new CheckpointException($"Unsupported model_type \"{modelType}\" (supported: seed_transformer, {string.Join(", ", Families.ModelFamilies.ModelTypes)})", path);
        var maxPositions = Int("max_positions");
        var config = new TransformerConfig
        {
            SourceVocabSize = Int("src_vocab_size"),
            TargetVocabSize = Int("tgt_vocab_size"),
            DModel = Int("d_model"),
            DFF = Int("d_ff"),
            EncoderLayers = Int("encoder_layers"),
            DecoderLayers = Int("decoder_layers"),
            Heads = Int("heads"),
            KvHeads = Int("kv_heads"),
            MaxSourcePositions = maxPositions,
            MaxTargetPositions = maxPositions,
            Block = Enum("block", ("serial", BlockKind.Serial), ("parallel", BlockKind.Parallel)),
            Norm = Enum("norm", ("seed", NormKind.Seed), ("layernorm", NormKind.LayerNorm), ("rmsnorm", NormKind.RmsNorm)),
            NormEps = Num("norm_eps"),
            Positions = Enum("positions", ("sinusoidal", PositionKind.Sinusoidal), ("learned", PositionKind.Learned), ("rotary", PositionKind.Rotary)),
            RopeTheta = Num("rope_theta"),
            FeedForward = Enum("ffn", ("relu", FeedForwardKind.Relu), ("gelu", FeedForwardKind.Gelu), ("swiglu", FeedForwardKind.SwiGlu), ("silu", FeedForwardKind.Silu)),
            FeedForwardBias = Bool("ffn_bias"),
            EmbeddingScale = Bool("embedding_scale"),
            TieOutputProjection = Bool("tie_output_projection"),
            ProjectionBias = Bool("projection_bias"),
            UnkId = Int("unk_id"),
            PadId = Int("pad_id"),
            SosId = Int("sos_id"),
            EosId = Int("eos_id"),
        };
        if (Math.Abs(Num("attention_mask_value")) < 1e4)
            throw new CheckpointException("attention_mask_value must be a large negative number (masked keys get zero weight)", path);
        try
        {
            config.Validate();
        }
        catch (ArgumentException e)
        {
            throw new CheckpointException($"config.json is inconsistent: {e.Message}", path, inner: e);
        }
        if (root.TryGetProperty("head_dim", out _) && Int("head_dim") != config.HeadDim)
            throw new CheckpointException($"config.json head_dim {Int("head_dim")} is not d_model / heads = {config.HeadDim}", path);
        return config;
    }
}
