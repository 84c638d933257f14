using System.Text.Json;
using TransformerInference.Decoding;
using static TorchSharp.torch;

namespace TransformerInference.Loading;

/// <summary>
/// Hugging Face model folders of the BART-style translation families: <c>config.json</c> with <c>model_type</c>
/// <c>marian</c> or <c>m2m_100</c> (M2M100 and NLLB), weights in <c>model.safetensors</c> or <c>pytorch_model.bin</c>.
/// Each family is a <see cref="TransformerConfig"/> plus the map from Hugging Face tensor names to ours; the layers
/// are the common ones.
/// </summary>
internal static class HuggingFaceFolder
{
    public static readonly string[] ModelTypes = { "marian", "m2m_100" };

    /// <summary>The folder's config.json, if it names a Hugging Face model type we load.</summary>
    public static bool IsHuggingFace(string configPath, out JsonElement root)
    {
        root = Parse(configPath);
        return root.TryGetProperty("model_type", out var t) && t.ValueKind == JsonValueKind.String
            && ModelTypes.Contains(t.GetString());
    }

    public static JsonElement Parse(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"The model folder has no config.json: '{path}'.", path);
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new CheckpointException("config.json must hold an object", path);
            return doc.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw new CheckpointException($"config.json is not valid JSON: {e.Message}", path, inner: e);
        }
    }

    /// <summary>The architecture from config.json. Marian: post-norm, no final norms, Marian sinusoids, one shared
    /// embedding table tied to the output, <c>final_logits_bias</c>. M2M100/NLLB: pre-norm with final norms, fairseq
    /// sinusoids offset by padding id + 1, tied output without bias.</summary>
    public static TransformerConfig ReadConfig(JsonElement root, string path)
    {
        var r = new Reader(root, path);
        var modelType = r.Str("model_type");
        var marian = modelType == "marian";
        var dModel = r.Int("d_model");
        var heads = r.Int("encoder_attention_heads");
        if (r.Int("decoder_attention_heads") != heads)
            throw new CheckpointException($"Different encoder ({heads}) and decoder ({r.Int("decoder_attention_heads")}) head counts are not supported", path);
        var dff = r.Int("encoder_ffn_dim");
        if (r.Int("decoder_ffn_dim") != dff)
            throw new CheckpointException($"Different encoder ({dff}) and decoder ({r.Int("decoder_ffn_dim")}) ffn widths are not supported", path);
        var vocab = r.Int("vocab_size");
        var targetVocab = marian && r.Has("decoder_vocab_size") && !r.IsNull("decoder_vocab_size") ? r.Int("decoder_vocab_size") : vocab;
        if (marian && r.Has("share_encoder_decoder_embeddings") && !r.Bool("share_encoder_decoder_embeddings"))
            throw new CheckpointException("Marian models with separate encoder and decoder embeddings (share_encoder_decoder_embeddings false) are not supported", path);
        if (r.Has("tie_word_embeddings") && !r.Bool("tie_word_embeddings"))
            throw new CheckpointException("Models with an untied lm_head (tie_word_embeddings false) are not supported", path);
        var activation = r.Has("activation_function") ? r.Str("activation_function") : marian ? "swish" : "relu";
        var ffn = activation switch
        {
            "relu" => FeedForwardKind.Relu,
            "gelu" => FeedForwardKind.Gelu,
            "swish" or "silu" => FeedForwardKind.Silu,
            _ => throw new CheckpointException($"config.json activation_function \"{activation}\" is not supported (relu, gelu, swish, silu)", path),
        };
        var pad = r.Int("pad_token_id");
        var eos = r.Int("eos_token_id");
        var start = r.Has("decoder_start_token_id") && !r.IsNull("decoder_start_token_id") ? r.Int("decoder_start_token_id") : marian ? pad : eos;
        var maxPositions = r.Int("max_position_embeddings");
        var config = new TransformerConfig
        {
            SourceVocabSize = vocab,
            TargetVocabSize = targetVocab,
            DModel = dModel,
            DFF = dff,
            EncoderLayers = r.Int("encoder_layers"),
            DecoderLayers = r.Int("decoder_layers"),
            Heads = heads,
            MaxSourcePositions = maxPositions,
            MaxTargetPositions = maxPositions,
            Block = BlockKind.Serial,
            NormPlacement = marian ? NormPlacement.Post : NormPlacement.Pre,
            FinalNorms = !marian,
            Norm = NormKind.LayerNorm,
            NormEps = 1e-5,
            Positions = marian ? PositionKind.SinusoidalHalves : PositionKind.Fairseq,
            PositionOffset = marian ? 0 : pad + 1,
            FeedForward = ffn,
            FeedForwardBias = true,
            AttentionBias = true,
            EmbeddingScale = r.Has("scale_embedding") && r.Bool("scale_embedding"),
            SharedEmbeddings = true,
            TieOutputProjection = true,
            ProjectionBias = marian,
            // Not in config.json (the tokenizer's): Marian's <unk> is 1, fairseq vocabularies' 3.
            UnkId = marian ? 1 : 3,
            PadId = pad,
            SosId = start,
            EosId = eos,
        };
        try
        {
            return config.Validate();
        }
        catch (ArgumentException e)
        {
            throw new CheckpointException($"config.json is inconsistent: {e.Message}", path, inner: e);
        }
    }

    /// <summary>Generation defaults: generation_config.json, falling back to config.json key by key.</summary>
    public static DecodingOptions ReadGenerationDefaults(string folder)
    {
        var configPath = Path.Combine(folder, "config.json");
        var config = Parse(configPath);
        var generationPath = Path.Combine(folder, "generation_config.json");
        var generation = File.Exists(generationPath) ? Parse(generationPath) : default;
        // Each value comes from generation_config.json when it has it, else from config.json; errors name that file.
        (JsonElement Value, string File)? Get(string name)
        {
            if (generation.ValueKind == JsonValueKind.Object && generation.TryGetProperty(name, out var g)) return (g, generationPath);
            return config.TryGetProperty(name, out var c) ? (c, configPath) : null;
        }
        CheckpointException Bad(string name, string what, (JsonElement Value, string File) found) =>
            new($"'{name}' must be {what}, got {found.Value.GetRawText()}", found.File);
        int? Int(string name) => Get(name) switch
        {
            null => null,
            { Value.ValueKind: JsonValueKind.Null } => null,
            { Value.ValueKind: JsonValueKind.Number } f when f.Value.TryGetInt32(out var v) => v,
            var f => throw Bad(name, "an integer", f.Value),
        };
        double? Num(string name) => Get(name) switch
        {
            null => null,
            { Value.ValueKind: JsonValueKind.Null } => null,
            { Value.ValueKind: JsonValueKind.Number } f => f.Value.GetDouble(),
            var f => throw Bad(name, "a number", f.Value),
        };
        IReadOnlyList<IReadOnlyList<int>>? badWords = null;
        if (Get("bad_words_ids") is { Value.ValueKind: JsonValueKind.Array } bad)
        {
            try
            {
                badWords = bad.Value.EnumerateArray().Select(w => (IReadOnlyList<int>)w.EnumerateArray().Select(t => t.GetInt32()).ToArray()).ToArray();
            }
            catch (Exception e) when (e is InvalidOperationException or FormatException)
            {
                throw new CheckpointException($"'bad_words_ids' must be a list of lists of ids, got {bad.Value.GetRawText()}", bad.File, inner: e);
            }
        }
        // early_stopping: true, false or "never".
        var earlyStopping = Get("early_stopping") switch
        {
            null => EarlyStopping.Heuristic,
            { Value.ValueKind: JsonValueKind.Null or JsonValueKind.False } => EarlyStopping.Heuristic,
            { Value.ValueKind: JsonValueKind.True } => EarlyStopping.Immediate,
            { Value.ValueKind: JsonValueKind.String } f when f.Value.GetString() == "never" => EarlyStopping.Never,
            var f => throw Bad("early_stopping", "true, false or \"never\"", f.Value),
        };
        return new DecodingOptions
        {
            MaxLength = Int("max_length"),
            MinLength = Int("min_length") is > 0 and var minLength ? minLength : null, // counts the decoder start token
            MinNewTokens = Int("min_new_tokens") ?? 0,
            BeamSize = Int("num_beams") ?? 1,
            NBest = Int("num_return_sequences") ?? 1,
            EarlyStopping = earlyStopping,
            LengthPenalty = Num("length_penalty") ?? 1.0,
            RepetitionPenalty = Num("repetition_penalty") ?? 1.0,
            NoRepeatNgramSize = Int("no_repeat_ngram_size") ?? 0,
            DecoderStartTokenId = Int("decoder_start_token_id"),
            ForcedBosTokenId = Int("forced_bos_token_id"),
            ForcedEosTokenId = Int("forced_eos_token_id"),
            BadWordsIds = badWords,
        }.Validate();
    }

    /// <summary>Reads the weights (model.safetensors, else pytorch_model.bin) and renames them to our names. Tied
    /// aliases (<c>lm_head.weight</c>, <c>model.{encoder,decoder}.embed_tokens.weight</c>) must equal the shared table
    /// and are dropped; stored sinusoid tables (<c>embed_positions.weight</c>) are dropped (they are computed).</summary>
    public static (Dictionary<string, Tensor> Tensors, Func<string, string> NameInFile) Rename(
        TransformerConfig c, Dictionary<string, Tensor> tensors, string source)
    {
        var map = CanonicalToHf(c);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            if (!tensors.ContainsKey("model.shared.weight"))
            {
                // Some exports keep only a tied alias; take it as the shared table.
                foreach (var alias in new[] { "model.decoder.embed_tokens.weight", "model.encoder.embed_tokens.weight", "lm_head.weight" })
                    if (tensors.Remove(alias, out var t)) { tensors["model.shared.weight"] = t; break; }
            }
            foreach (var alias in new[] { "lm_head.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight" })
            {
                if (!tensors.Remove(alias, out var t)) continue;
                using (t)
                {
                    if (tensors.TryGetValue("model.shared.weight", out var shared) && !SameValues(t, shared))
                        throw new CheckpointException("The tensor differs from model.shared.weight: untied embeddings are not supported", source, alias);
                }
            }
            foreach (var name in tensors.Keys.Where(k => k.Contains(".embed_positions.")).ToList())
            {
                tensors.Remove(name, out var t);
                t!.Dispose();
            }
            foreach (var (canonical, hf) in map)
            {
                if (!tensors.Remove(hf, out var t)) continue;
                if (hf == "final_logits_bias")
                {
                    using (t) result[canonical] = t.dim() == 2 && t.shape[0] == 1 ? t.reshape(t.shape[1]).clone() : t.alias();
                }
                else result[canonical] = t;
            }
            // Leftovers keep their Hugging Face names, so the "unused tensor" error names them as the file does.
            foreach (var (name, t) in tensors) result[name] = t;
            tensors.Clear();
        }
        catch
        {
            foreach (var t in tensors.Values.Concat(result.Values)) t.Dispose();
            throw;
        }
        return (result, name => map.TryGetValue(name, out var hf) ? hf : name);
    }

    // torch.equal: no element-wise boolean tensor the size of the table.
    private static bool SameValues(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.Equals(b);

    /// <summary>Our canonical tensor names and their Hugging Face names.</summary>
    private static Dictionary<string, string> CanonicalToHf(TransformerConfig c)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["tgt_embed.embedding.weight"] = "model.shared.weight",
            ["projection_layer.proj.bias"] = "final_logits_bias",
        };
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
        }
        return map;
    }

    /// <summary>Typed access to config.json fields with messages naming the field.</summary>
    private readonly struct Reader(JsonElement root, string path)
    {
        public bool Has(string name) => root.TryGetProperty(name, out _);
        public bool IsNull(string name) => Field(name).ValueKind == JsonValueKind.Null;
        private JsonElement Field(string name) => root.TryGetProperty(name, out var v) ? v
            : throw new CheckpointException($"config.json lacks the field '{name}'", path);
        public int Int(string name) => Field(name) is { ValueKind: JsonValueKind.Number } f && f.TryGetInt32(out var v) ? v : throw Bad(name, "an integer");
        public bool Bool(string name) => Field(name).ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Bad(name, "true or false"),
        };
        public string Str(string name) => Field(name).ValueKind == JsonValueKind.String ? Field(name).GetString()! : throw Bad(name, "a string");
        private CheckpointException Bad(string name, string what) =>
            new($"config.json field '{name}' must be {what}, got {Field(name).GetRawText()}", path);
    }
}
