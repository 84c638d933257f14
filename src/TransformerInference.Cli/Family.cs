using System.Text.Json;

namespace TransformerInference.Cli;

/// <summary>What a model folder is, read from its small files before any weight is loaded.</summary>
internal sealed record Family(string Name, string ModelType, bool HasTokenizer, IReadOnlyList<string>? Languages, DecodingOptions? GenerationDefaults)
{
    /// <summary>Reads <c>config.json</c> (<c>model_type</c>), the tokenizer files and the generation defaults.</summary>
    /// <exception cref="FileNotFoundException">The folder has no config.json.</exception>
    /// <exception cref="InvalidDataException">config.json is not JSON.</exception>
    public static Family Read(string folder)
    {
        var configPath = Path.Combine(folder, "config.json");
        if (!File.Exists(configPath)) throw new FileNotFoundException($"The model folder has no config.json: '{configPath}'.", configPath);
        string modelType;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(configPath));
            modelType = doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("model_type", out var t)
                        && t.ValueKind == JsonValueKind.String ? t.GetString()! : "";
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{configPath}' is not valid JSON: {e.Message}", e);
        }
        if (modelType == "seed_transformer") return new Family("seed", modelType, false, null, null);
        // Hugging Face folders carry their tokenizer (a folder of weights alone still runs --input-format ids).
        var hasTokenizer = new[] { "tokenizer_config.json", "spiece.model", "source.spm", "sentencepiece.bpe.model" }
            .Any(f => File.Exists(Path.Combine(folder, f)));
        if (!hasTokenizer) return new Family(modelType, modelType, false, null, ModelLoader.LoadGenerationDefaults(folder));
        var tokenizer = ModelLoader.LoadTokenizer(folder);
        var languages = tokenizer.Languages.Count == 0 ? null : tokenizer.Languages;
        return new Family(tokenizer.Family.ToString(), modelType, true, languages, ModelLoader.LoadGenerationDefaults(folder));
    }
}
