using System.Collections;
using System.Text.Json;
using TorchSharp;
using TorchSharp.PyBridge;
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
    public static TransformerModel Load(string path, ModelLoadOptions? options = null) =>
        Directory.Exists(path) ? LoadFolder(path, options) : LoadSeedCheckpoint(path, options);

    /// <summary>
    /// Loads a <c>torch.save</c> file of the classic "pytorch-transformer" seed: a plain state dict or a training
    /// checkpoint holding <c>model_state_dict</c>. Both naming schemes load (detected from the keys); every size is
    /// inferred from tensor shapes, the head count comes from <see cref="ModelLoadOptions.Heads"/>.
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="CheckpointException">The file is corrupt, truncated, not a checkpoint, or has missing,
    /// unexpected or mis-shaped tensors.</exception>
    /// <exception cref="ArgumentException">The head count does not divide d_model.</exception>
    public static TransformerModel LoadSeedCheckpoint(string path, ModelLoadOptions? options = null)
    {
        NativeLibraryCheck.EnsureLoaded();
        options ??= new ModelLoadOptions();
        var tensors = ReadTorchSave(path);
        try
        {
            var (config, canonical) = SeedCheckpoint.Interpret(tensors, path, options);
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
        options ??= new ModelLoadOptions();
        var configPath = Path.Combine(folder, "config.json");
        if (HuggingFaceFolder.FamilyOf(configPath) is { } family) return LoadHuggingFace(folder, family, options);
        var weightsPath = Path.Combine(folder, "model.safetensors");
        var config = FolderConfig.Read(configPath);
        if (!File.Exists(weightsPath)) throw new FileNotFoundException($"The model folder has no model.safetensors: '{weightsPath}'.", weightsPath);
        Dictionary<string, Tensor> tensors;
        try
        {
            tensors = Safetensors.LoadStateDict(weightsPath);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new CheckpointException($"Cannot read safetensors weights: {e.Message}", weightsPath, inner: e);
        }
        return Build(config, tensors, weightsPath, options);
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
            try
            {
                tensors = Safetensors.LoadStateDict(weightsPath);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                throw new CheckpointException($"Cannot read safetensors weights: {e.Message}", weightsPath, inner: e);
            }
        }
        else if (File.Exists(binPath))
        {
            weightsPath = binPath;
            tensors = ReadTorchSave(binPath);
        }
        else throw new FileNotFoundException($"The model folder has neither model.safetensors nor pytorch_model.bin: '{folder}'.", safetensorsPath);
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
        Build(config.Validate(), new Dictionary<string, Tensor>(tensors, StringComparer.Ordinal), source, options ?? new ModelLoadOptions());

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
        using var _ = no_grad();
        return new TransformerModel(config, weights, options.FuseParallel);
    }

    /// <summary>Reads every tensor of a <c>torch.save</c> zip file; a checkpoint dict yields its <c>model_state_dict</c>.</summary>
    private static Dictionary<string, Tensor> ReadTorchSave(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Checkpoint file not found: '{path}'.", path);
        Hashtable top;
        try
        {
            using var stream = File.OpenRead(path);
            top = PyTorchUnpickler.UnpickleStateDict(stream, leaveOpen: true);
        }
        catch (NotImplementedException e)
        {
            throw new CheckpointException("Not a zip-format torch.save file (the legacy format is not supported; re-save with a current PyTorch)", path, inner: e);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new CheckpointException($"Cannot read the checkpoint (corrupt or truncated?): {e.GetType().Name}: {e.Message}", path, inner: e);
        }
        var dict = top;
        if (top.ContainsKey("model_state_dict"))
        {
            dict = top["model_state_dict"] as Hashtable
                ?? throw new CheckpointException("'model_state_dict' is not a dictionary", path);
        }
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (DictionaryEntry entry in dict)
        {
            if (entry.Key is string name && entry.Value is Tensor t) result[name] = t;
        }
        // Tensors outside the state dict (optimizer state) are not needed.
        if (!ReferenceEquals(dict, top)) DisposeTensors(top, dict);
        if (result.Count == 0)
            throw new CheckpointException("The file holds no model tensors (neither a state dict nor a dict with 'model_state_dict')", path);
        return result;
    }

    private static void DisposeTensors(object? value, Hashtable keep)
    {
        switch (value)
        {
            case Tensor t: t.Dispose(); break;
            case Hashtable h when !ReferenceEquals(h, keep):
                foreach (DictionaryEntry e in h) DisposeTensors(e.Value, keep);
                break;
            case IEnumerable list and not string:
                foreach (var item in list) DisposeTensors(item, keep);
                break;
        }
    }
}
