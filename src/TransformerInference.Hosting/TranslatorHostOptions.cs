using Microsoft.Extensions.Options;

namespace TransformerInference.Hosting;

/// <summary>
/// One hosted translator, bound from configuration (e.g. <c>"Translators": { "demo": { "ModelPath": … } }</c>) or set in
/// code. Give either <see cref="ModelFolder"/> (a Hugging Face Marian / M2M100 / NLLB folder) or
/// <see cref="ModelPath"/> with <see cref="SourceTokenizerPath"/> and <see cref="TargetTokenizerPath"/> (a seed
/// checkpoint with WordLevel tokenizers). Checked when the host starts.
/// </summary>
public sealed class TranslatorHostOptions
{
    /// <summary>A Hugging Face translation folder.</summary>
    public string? ModelFolder { get; set; }

    /// <summary>A seed checkpoint (<c>torch.save</c> file) or model folder used with WordLevel tokenizers.</summary>
    public string? ModelPath { get; set; }

    /// <summary>The source WordLevel <c>tokenizer.json</c> (with <see cref="ModelPath"/>).</summary>
    public string? SourceTokenizerPath { get; set; }

    /// <summary>The target WordLevel <c>tokenizer.json</c> (with <see cref="ModelPath"/>).</summary>
    public string? TargetTokenizerPath { get; set; }

    /// <summary>Source language of a multilingual model (M2M100 <c>en</c>, NLLB <c>eng_Latn</c>).</summary>
    public string? SourceLanguage { get; set; }

    /// <summary>Target language of a multilingual model (M2M100 <c>ne</c>, NLLB <c>npi_Deva</c>).</summary>
    public string? TargetLanguage { get; set; }

    /// <summary>Attention heads of a seed checkpoint; null (default): <c>"h"</c> of the <c>model_args.json</c> beside
    /// it, else 8. A value that disagrees with that file is an error.</summary>
    public int? Heads { get; set; }

    /// <summary>LibTorch CPU threads (process-wide); null leaves LibTorch's default.</summary>
    public int? Threads { get; set; }

    /// <summary>Most sentences decoded together (default 32).</summary>
    public int MaxBatchSize { get; set; } = 32;

    /// <summary>Cut over-long inputs instead of rejecting them (default false).</summary>
    public bool Truncate { get; set; }

    /// <summary>Most calls admitted at once, running or waiting (default 64); one more is refused with
    /// <see cref="TranslatorBusyException"/> (HTTP 429).</summary>
    public int QueueCapacity { get; set; } = 64;

    /// <summary>Admitted calls above which the health check reports Degraded (default: half of
    /// <see cref="QueueCapacity"/>).</summary>
    public int? DegradedQueueLength { get; set; }

    /// <summary>Seconds a refused caller is told to wait (<c>Retry-After</c>, default 1).</summary>
    public int RetryAfterSeconds { get; set; } = 1;

    /// <summary>The library options these settings make, named <paramref name="name"/> in metrics and traces, with the
    /// translator's warnings going to <paramref name="logger"/>.</summary>
    public TranslatorOptions ToTranslatorOptions(string name, Microsoft.Extensions.Logging.ILogger? logger = null) => new()
    {
        Name = name,
        Logger = logger,
        Heads = Heads,
        Threads = Threads,
        MaxBatchSize = MaxBatchSize,
        Truncate = Truncate,
        SourceLanguage = SourceLanguage,
        TargetLanguage = TargetLanguage,
    };
}

/// <summary>Checks <see cref="TranslatorHostOptions"/> at start-up; every message names the translator and the field.</summary>
internal sealed class TranslatorHostOptionsValidator : IValidateOptions<TranslatorHostOptions>
{
    public ValidateOptionsResult Validate(string? name, TranslatorHostOptions o)
    {
        var errors = new List<string>();
        var prefix = $"Translator '{name}': ";
        void File(string? path, string field)
        {
            if (string.IsNullOrWhiteSpace(path)) errors.Add(prefix + $"{field} is required.");
            else if (!System.IO.File.Exists(path) && !Directory.Exists(path)) errors.Add(prefix + $"{field} '{path}' does not exist.");
        }
        if (o.ModelFolder is not null)
        {
            if (o.ModelPath is not null) errors.Add(prefix + "set ModelFolder or ModelPath, not both.");
            if (!Directory.Exists(o.ModelFolder)) errors.Add(prefix + $"ModelFolder '{o.ModelFolder}' does not exist.");
        }
        else if (o.ModelPath is not null)
        {
            File(o.ModelPath, nameof(o.ModelPath));
            File(o.SourceTokenizerPath, nameof(o.SourceTokenizerPath));
            File(o.TargetTokenizerPath, nameof(o.TargetTokenizerPath));
        }
        else
        {
            errors.Add(prefix + "set ModelFolder (Hugging Face folder) or ModelPath with SourceTokenizerPath and TargetTokenizerPath.");
        }
        if (o.Heads is < 1) errors.Add(prefix + $"Heads must be positive, got {o.Heads}.");
        if (o.Threads is < 1) errors.Add(prefix + $"Threads must be positive, got {o.Threads}.");
        if (o.MaxBatchSize < 1) errors.Add(prefix + $"MaxBatchSize must be positive, got {o.MaxBatchSize}.");
        if (o.QueueCapacity < 1) errors.Add(prefix + $"QueueCapacity must be positive, got {o.QueueCapacity}.");
        if (o.DegradedQueueLength is { } d && (d < 0 || d > o.QueueCapacity))
            errors.Add(prefix + $"DegradedQueueLength must be between 0 and QueueCapacity ({o.QueueCapacity}), got {d}.");
        if (o.RetryAfterSeconds < 1) errors.Add(prefix + $"RetryAfterSeconds must be positive, got {o.RetryAfterSeconds}.");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
