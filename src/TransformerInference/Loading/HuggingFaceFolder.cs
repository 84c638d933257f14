using System.Text.Json;
using TransformerInference.Decoding;
using static TorchSharp.torch;

namespace TransformerInference.Loading;

/// <summary>
/// Hugging Face model folders: <c>config.json</c> whose <c>model_type</c> names a registered
/// <see cref="Families.ModelFamily"/>, weights in <c>model.safetensors</c> or <c>pytorch_model.bin</c>, and
/// generation defaults. The family supplies the configuration and the tensor names; the renaming is common.
/// </summary>
internal static class HuggingFaceFolder
{
    /// <summary>The family of the folder's config.json, or null when its model_type is not a Hugging Face one we load.</summary>
    public static Families.ModelFamily? FamilyOf(string configPath) =>
        Families.ModelFamilies.ModelTypeOf(configPath) is { } type ? Families.ModelFamilies.Find(type) : null;

    public static JsonElement Parse(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"The model folder has no config.json: '{path}'.", path);
        var name = Path.GetFileName(path);
        using var doc = UntrustedJson.ParseFile(path, (message, e) => new CheckpointException($"{name}: {message}", path, inner: e));
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new CheckpointException($"{name} must hold an object", path);
        return doc.RootElement.Clone();
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
            { Value.ValueKind: JsonValueKind.Number } f when f.Value.TryGetDouble(out var v) && double.IsFinite(v) => v,
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
        var options = new DecodingOptions
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
        };
        try
        {
            return options.Validate();
        }
        catch (ArgumentException e)
        {
            // Name the file the bad value came from (generation_config.json, else config.json).
            var file = generation.ValueKind == JsonValueKind.Object ? generationPath : configPath;
            throw new CheckpointException($"Generation defaults out of range: {e.Message}", file, inner: e);
        }
    }

    /// <summary>Renames a family's tensors to our names. Tied aliases must equal their primary and are dropped (a file
    /// holding only an alias gives it as the primary); tensors the family ignores are dropped; leftovers keep their
    /// file names, so the "unused tensor" error names them as the file does.</summary>
    public static (Dictionary<string, Tensor> Tensors, Func<string, string> NameInFile) Rename(
        Families.ModelFamily family, TransformerConfig c, Dictionary<string, Tensor> tensors, string source)
    {
        var map = family.TensorNames(c);
        var aliases = family.TiedAliases(c);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var primary in aliases.Select(a => a.Primary).Distinct())
            {
                if (tensors.ContainsKey(primary)) continue;
                // Some exports keep only a tied alias; take it as the primary.
                foreach (var (alias, _) in aliases.Where(a => a.Primary == primary))
                    if (tensors.Remove(alias, out var t)) { tensors[primary] = t; break; }
            }
            foreach (var (alias, primary) in aliases)
            {
                if (!tensors.Remove(alias, out var t)) continue;
                using (t)
                {
                    if (tensors.TryGetValue(primary, out var kept) && !SameValues(t, kept))
                        throw new CheckpointException($"The tensor differs from {primary}, to which the model ties it", source, alias);
                }
            }
            foreach (var name in tensors.Keys.Where(family.IsIgnored).ToList())
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
}
