using System.Text.Json;
using TorchSharp;
using TransformerInference.Modeling;
using TransformerInference.Modeling.Kernels;
using static TorchSharp.torch;

namespace TransformerInference.Loading;

/// <summary>
/// Builds a <see cref="TransformerModel"/> from files: seed checkpoints (<c>torch.save</c> files in either naming
/// scheme), model folders (<c>config.json</c> + <c>model.safetensors</c>) and Hugging Face Marian / M2M100 / NLLB folders.
/// </summary>
public static class ModelLoader
{
    /// <summary>Loads a seed checkpoint file or a model folder, whichever <paramref name="path"/> is.</summary>
    /// <exception cref="FileNotFoundException">Nothing exists at the path.</exception>
    /// <exception cref="CheckpointException">The file cannot be used; the message names the file and tensor.</exception>
    public static TransformerModel Load(string path, ModelLoadOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        return Directory.Exists(path) ? LoadFolder(path, options) : LoadSeedCheckpoint(path, options);
    }

    /// <summary>
    /// Loads a <c>torch.save</c> file of the classic "pytorch-transformer" seed: a plain state dict or a training
    /// checkpoint holding <c>model_state_dict</c>. Both naming schemes load (detected from the keys); every size is
    /// inferred from tensor shapes; the head count is <see cref="ModelLoadOptions.Heads"/>, else <c>"h"</c> of the
    /// <c>model_args.json</c> beside the checkpoint (<see cref="ReadSeedHeads"/>), else 8.
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="CheckpointException">The file is corrupt, truncated, not a checkpoint, or has missing,
    /// unexpected or mis-shaped tensors; or, with no explicit <see cref="ModelLoadOptions.Heads"/>, the
    /// <c>model_args.json</c> beside it is malformed (the message names it; an explicit Heads is used as given).</exception>
    /// <exception cref="ArgumentException">The head count does not divide d_model, or an explicit
    /// <see cref="ModelLoadOptions.Heads"/> disagrees with <c>model_args.json</c> (the message names both values and
    /// the file).</exception>
    public static TransformerModel LoadSeedCheckpoint(string path, ModelLoadOptions? options = null)
    {
        NativeLibraryCheck.EnsureLoaded();
        options = (options ?? new ModelLoadOptions()).Validate();
        var tensors = ReadTorchSave(path);
        try
        {
            var heads = SeedHeads(path, options.Heads);
            var (config, canonical) = SeedCheckpoint.Interpret(tensors, path, options, heads);
            return Build(config, canonical, path, options);
        }
        catch
        {
            foreach (var t in tensors.Values) t.Dispose();
            throw;
        }
    }

    /// <summary>Loads a folder holding <c>config.json</c> and its weights: our schema (<c>model_type</c>
    /// <c>seed_transformer</c>, see the README) with <c>model.safetensors</c>, or a Hugging Face Marian, M2M100 or NLLB
    /// folder (<c>model_type</c> <c>marian</c> or <c>m2m_100</c>) with <c>model.safetensors</c> or, without it,
    /// <c>pytorch_model.bin</c>. Generation rules of a Hugging Face folder: <see cref="LoadGenerationDefaults"/>.</summary>
    /// <exception cref="FileNotFoundException">A file is missing.</exception>
    /// <exception cref="CheckpointException">The config or weights cannot be used.</exception>
    public static TransformerModel LoadFolder(string folder, ModelLoadOptions? options = null)
    {
        NativeLibraryCheck.EnsureLoaded();
        options = (options ?? new ModelLoadOptions()).Validate();
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"The model folder '{folder}' does not exist.");
        var configPath = Path.Combine(folder, "config.json");
        if (HuggingFaceFolder.FamilyOf(configPath) is { } family) return LoadHuggingFace(folder, family, options);
        var weightsPath = Path.Combine(folder, "model.safetensors");
        var config = FolderConfig.Read(configPath);
        if (!File.Exists(weightsPath)) throw new FileNotFoundException($"The model folder has no model.safetensors: '{weightsPath}'.", weightsPath);
        Dictionary<string, Tensor> tensors;
        tensors = SafetensorsFile.Read(weightsPath);
        return Build(config, tensors, weightsPath, options);
    }

    /// <summary>The attention head count the seed's training scripts record as <c>"h"</c> in <c>model_args.json</c>
    /// beside a checkpoint (seed checkpoints do not record it themselves); null when there is no such file or it has no
    /// <c>"h"</c>.</summary>
    /// <exception cref="CheckpointException">The file is not valid UTF-8 JSON, not an object, or its <c>"h"</c> is not
    /// a positive integer; the message names the file and field.</exception>
    public static int? ReadSeedHeads(string checkpointPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(checkpointPath);
        var path = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(checkpointPath)) ?? ".", "model_args.json");
        if (!File.Exists(path)) return null;
        using var doc = UntrustedJson.ParseFile(path, (message, e) => new CheckpointException($"model_args.json: {message}", path, inner: e));
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new CheckpointException("model_args.json must hold an object", path);
        if (!doc.RootElement.TryGetProperty("h", out var h) || h.ValueKind == JsonValueKind.Null) return null;
        return h.ValueKind == JsonValueKind.Number && h.TryGetInt32(out var heads) && heads > 0 ? heads
            : throw new CheckpointException($"model_args.json field 'h' (attention heads) must be a positive integer, got {h.GetRawText()}", path);
    }

    /// <summary>The head count a seed checkpoint is loaded with: <paramref name="explicitHeads"/> checked against
    /// <c>model_args.json</c> (used as given when that file is malformed), else that file's <c>"h"</c>, else 8.</summary>
    private static int SeedHeads(string checkpointPath, int? explicitHeads)
    {
        int? recorded;
        try
        {
            recorded = ReadSeedHeads(checkpointPath);
        }
        catch (CheckpointException) when (explicitHeads is not null)
        {
            // The caller said how many heads the model has: an unreadable model_args.json cannot be checked against
            // it, and must not block a valid model (issue 9); without Heads the file is needed and its error stands.
            return explicitHeads.Value;
        }

        if (explicitHeads is { } given && recorded is { } h && given != h)
        {
            var file = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(checkpointPath)) ?? ".", "model_args.json");
            throw new ArgumentException(
                $"Heads is {given}, but '{file}' beside the checkpoint records \"h\": {h}; leave Heads unset or pass {h}.",
                nameof(ModelLoadOptions.Heads));
        }
        return explicitHeads ?? recorded ?? 8;
    }

    /// <summary>
    /// The generation defaults of a Hugging Face folder (<c>generation_config.json</c>, else <c>config.json</c>):
    /// <c>max_length</c> → <see cref="Decoding.DecodingOptions.MaxLength"/>, <c>num_beams</c> → <see cref="Decoding.DecodingOptions.BeamSize"/>,
    /// <c>decoder_start_token_id</c>, <c>forced_bos_token_id</c>, <c>forced_eos_token_id</c>, <c>bad_words_ids</c>.
    /// Change per call with <c>with { ... }</c> (e.g. the target language as <see cref="Decoding.DecodingOptions.ForcedBosTokenId"/>).
    /// </summary>
    /// <exception cref="FileNotFoundException">The folder has no config.json.</exception>
    /// <exception cref="CheckpointException">A value has the wrong type.</exception>
    public static Decoding.DecodingOptions LoadGenerationDefaults(string folder) => HuggingFaceFolder.ReadGenerationDefaults(folder);

    /// <summary>The tokenizer of a Hugging Face folder, as its family creates it (<c>tokenizer_config.json</c> names
    /// the class).</summary>
    /// <exception cref="FileNotFoundException">A file is missing.</exception>
    /// <exception cref="CheckpointException">config.json cannot be read or names no supported family.</exception>
    /// <exception cref="InvalidDataException">A tokenizer file is malformed.</exception>
    /// <exception cref="NotSupportedException">The tokenizer class or one of its options is not supported.</exception>
    public static Tokenization.SentencePieceTranslationTokenizer LoadTokenizer(string folder)
    {
        var configPath = Path.Combine(folder, "config.json");
        var family = HuggingFaceFolder.FamilyOf(configPath)
            ?? throw new CheckpointException($"config.json does not name a Hugging Face model type (supported: {string.Join(", ", Families.ModelFamilies.ModelTypes)})", configPath);
        return family.CreateTokenizer(folder);
    }

    private static TransformerModel LoadHuggingFace(string folder, Families.ModelFamily family, ModelLoadOptions options)
    {
        var configPath = Path.Combine(folder, "config.json");
        var config = family.ReadConfig(configPath);
        var safetensorsPath = Path.Combine(folder, "model.safetensors");
        var binPath = Path.Combine(folder, "pytorch_model.bin");
        string weightsPath;
        Dictionary<string, Tensor> tensors;
        if (File.Exists(safetensorsPath))
        {
            weightsPath = safetensorsPath;
            tensors = SafetensorsFile.Read(weightsPath);
        }
        else if (File.Exists(binPath))
        {
            weightsPath = binPath;
            tensors = ReadTorchSave(binPath);
        }
        else throw new FileNotFoundException($"The model folder has neither model.safetensors nor pytorch_model.bin: '{folder}'.", safetensorsPath);
        try
        {
            CheckSize(config, tensors, weightsPath);
        }
        catch
        {
            foreach (var t in tensors.Values) t.Dispose();
            throw;
        }
        var (renamed, nameInFile) = HuggingFaceFolder.Rename(family, config, tensors, weightsPath);
        return Build(config, renamed, weightsPath, options, nameInFile);
    }

    /// <summary>
    /// Builds a model from tensors already in our canonical naming (the names of the variant folders' safetensors,
    /// see the README) — for weights produced in code or converted elsewhere. The tensors are consumed: the model
    /// owns those it uses and the rest are disposed.
    /// </summary>
    /// <exception cref="CheckpointException">A tensor is missing, unexpected or mis-shaped.</exception>
    public static TransformerModel FromStateDict(TransformerConfig config, IDictionary<string, Tensor> tensors,
        ModelLoadOptions? options = null, string source = "state dict") =>
        Build(config.Validate(), new Dictionary<string, Tensor>(tensors, StringComparer.Ordinal), source, (options ?? new ModelLoadOptions()).Validate());

    private static TransformerModel Build(TransformerConfig config, Dictionary<string, Tensor> tensors, string source, ModelLoadOptions options,
        Func<string, string>? nameInFile = null)
    {
        var device = options.Device ?? CPU;
        LinearKernels kernels;
        try
        {
            kernels = LinearKernels.Choose(options.Kernel, options.Quantization, device, options.DType);
        }
        catch
        {
            foreach (var t in tensors.Values) t.Dispose();
            throw;
        }
        using var weights = new WeightSet(tensors, source, device, options.DType) { NameInFile = nameInFile ?? (n => n), Kernels = kernels };
        CheckSize(config, tensors, source);
        using var _ = no_grad();
        return new TransformerModel(config, weights, options.FuseParallel);
    }

    /// <summary>The config's sizes against the weights present, before anything is built for them: a model of the
    /// config's shape has at least <see cref="TransformerConfig.MinimumWeightCount"/> elements.</summary>
    private static void CheckSize(TransformerConfig config, Dictionary<string, Tensor> tensors, string source)
    {
        var present = tensors.Values.Sum(t => (double)t.NumberOfElements);
        var needed = config.MinimumWeightCount();
        if (needed > present)
            throw new CheckpointException(
                $"The config describes a model of at least {needed:0} weights ({config.EncoderLayers} encoder and {config.DecoderLayers} decoder layers, " +
                $"d_model {config.DModel}, d_ff {config.DFF}, vocabularies {config.SourceVocabSize}/{config.TargetVocabSize}); the weights hold {present:0}", source);
    }

    /// <summary>Reads every tensor of a <c>torch.save</c> zip file; a checkpoint dict yields its <c>model_state_dict</c>.</summary>
    private static Dictionary<string, Tensor> ReadTorchSave(string path) => TorchZip.ReadStateDict(path);
}
