using System.Text.Json;
using TransformerInference.Tokenization;

namespace TransformerInference.Loading.Families;

/// <summary>
/// One Hugging Face model family: turns its <c>config.json</c> (one typed record) into a <see cref="TransformerConfig"/>,
/// names its tensors in our canonical naming, and creates its tokenizer. The layers are the common ones; adding a
/// family is adding one of these to <see cref="ModelFamilies"/>.
/// </summary>
internal abstract class ModelFamily
{
    /// <summary>The <c>model_type</c> values of config.json this family loads.</summary>
    public abstract IReadOnlyList<string> ModelTypes { get; }

    /// <summary>The architecture from config.json; errors name the file and field.</summary>
    public abstract TransformerConfig ReadConfig(string configPath);

    /// <summary>Our canonical tensor names and the names the family's files give them.</summary>
    public abstract IReadOnlyDictionary<string, string> TensorNames(TransformerConfig config);

    /// <summary>Tensors stored under several names (tied weights): each alias and the name it must equal, in the order
    /// in which an alias stands in for a primary a file lacks.</summary>
    public abstract IReadOnlyList<(string Alias, string Primary)> TiedAliases(TransformerConfig config);

    /// <summary>Stored tensors the model does not read (computed tables, weights the reference ignores).</summary>
    public virtual bool IsIgnored(string name) => false;

    /// <summary>The folder's tokenizer (its <c>tokenizer_config.json</c> names the class).</summary>
    public virtual SentencePieceTranslationTokenizer CreateTokenizer(string folder) => SentencePieceTranslationTokenizer.Create(folder);

    /// <summary>Reads a config.json into its typed record; JSON and type errors become <see cref="CheckpointException"/>s
    /// naming the file and the field.</summary>
    protected static T Read<T>(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"The model folder has no config.json: '{path}'.", path);
        try
        {
            // UTF-8 and every string checked first: the typed reader then meets only valid text.
            var bytes = File.ReadAllBytes(path);
            using (UntrustedJson.Parse(bytes, (message, e) => new CheckpointException($"config.json: {message}", path, inner: e))) { }
            return JsonSerializer.Deserialize<T>(bytes, Options)
                ?? throw new CheckpointException("config.json must hold an object", path);
        }
        catch (JsonException e)
        {
            var field = string.IsNullOrEmpty(e.Path) || e.Path == "$" ? "" : $" (field '{e.Path.TrimStart('$', '.')}')";
            throw new CheckpointException($"config.json cannot be read{field}: {e.Message}", path, inner: e);
        }
    }

    /// <summary>Validates the config, turning its complaints into errors that name the file.</summary>
    protected static TransformerConfig Checked(TransformerConfig config, string path)
    {
        try
        {
            return config.Validate();
        }
        catch (ArgumentException e)
        {
            throw new CheckpointException($"config.json is inconsistent: {e.Message}", path, inner: e);
        }
    }

    private static readonly JsonSerializerOptions Options = new() { AllowTrailingCommas = true, ReadCommentHandling = JsonCommentHandling.Skip };
}

/// <summary>The families, by <c>model_type</c>.</summary>
internal static class ModelFamilies
{
    private static readonly ModelFamily[] All = { new MarianFamily(), new M2M100Family(), new MBartFamily(), new T5Family() };

    private static readonly Dictionary<string, ModelFamily> ByType =
        All.SelectMany(f => f.ModelTypes.Select(t => (t, f))).ToDictionary(p => p.t, p => p.f, StringComparer.Ordinal);

    /// <summary>Every supported <c>model_type</c>.</summary>
    public static IEnumerable<string> ModelTypes => ByType.Keys;

    /// <summary>The family of a <c>model_type</c>, or null.</summary>
    public static ModelFamily? Find(string modelType) => ByType.GetValueOrDefault(modelType);

    /// <summary>The <c>model_type</c> of a config.json (null when absent or not a string).</summary>
    public static string? ModelTypeOf(string configPath)
    {
        if (!File.Exists(configPath)) throw new FileNotFoundException($"The model folder has no config.json: '{configPath}'.", configPath);
        using var doc = UntrustedJson.ParseFile(configPath, (message, e) => new CheckpointException($"config.json: {message}", configPath, inner: e));
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new CheckpointException("config.json must hold an object", configPath);
        return doc.RootElement.TryGetProperty("model_type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
    }
}
