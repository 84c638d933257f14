using TransformerInference.Loading;
using static TorchSharp.torch;

namespace TransformerInference;

/// <summary>How a <see cref="Translator"/> loads its model and batches its inputs.</summary>
public sealed record TranslatorOptions
{
    /// <summary>The translator's name in metrics (tag <c>model</c>) and traces (default <c>default</c>).</summary>
    public string Name { get; init; } = "default";

    /// <summary>Receives the translator's warnings (an input cut to the model's limit with <see cref="Truncate"/>);
    /// null: none are written.</summary>
    public Microsoft.Extensions.Logging.ILogger? Logger { get; init; }

    /// <summary>Device for the model (default CPU). <c>torch.CUDA</c> needs the CUDA backend package.</summary>
    public Device? Device { get; init; }

    /// <summary>Floating-point type of the model (default float32).</summary>
    public ScalarType DType { get; init; } = ScalarType.Float32;

    /// <summary>Storage of the linear-layer weights (default none: as loaded). <see cref="WeightQuantization.Int8"/>
    /// and <see cref="WeightQuantization.BFloat16"/> convert them at load (CPU float32 models).</summary>
    public WeightQuantization Quantization { get; init; }

    /// <summary>Attention heads of a seed checkpoint, which does not record them. Null (default): <c>"h"</c> of the
    /// <c>model_args.json</c> beside the checkpoint, else 8 (see <see cref="ModelLoadOptions.Heads"/>); a value that
    /// disagrees with that file is an error.</summary>
    public int? Heads { get; init; }

    /// <summary>Most sentences decoded together (default 32).</summary>
    public int MaxBatchSize { get; init; } = 32;

    /// <summary>Most source positions (padding included) in one batch (default 4096); a longer single input still
    /// runs, alone.</summary>
    public int MaxBatchTokens { get; init; } = 4096;

    /// <summary>Cut inputs longer than the model accepts instead of throwing (default false).</summary>
    public bool Truncate { get; init; }

    /// <summary>CPU threads for LibTorch (process-wide); null leaves LibTorch's default.</summary>
    public int? Threads { get; init; }

    /// <summary>Search options used when a call passes none. Null: the family's defaults — greedy up to the model's
    /// length limit for seed models, the folder's <c>generation_config.json</c> for Hugging Face folders.</summary>
    public Decoding.DecodingOptions? Decoding { get; init; }

    /// <summary>Source language of multilingual Hugging Face models (M2M100 <c>en</c>, NLLB <c>eng_Latn</c>);
    /// null: the tokenizer's default.</summary>
    public string? SourceLanguage { get; init; }

    /// <summary>Target language of multilingual Hugging Face models (M2M100 <c>ne</c>, NLLB <c>npi_Deva</c>), forced
    /// as the first generated token; null: the tokenizer's default.</summary>
    public string? TargetLanguage { get; init; }

    /// <summary>Most CPU threads <see cref="Threads"/> may ask LibTorch for.</summary>
    public const int MaxThreads = 1024;

    /// <summary>Checks every option in one place, before anything is loaded: a floating-point dtype, positive head
    /// count and batch limits, <see cref="Threads"/> within 1..<see cref="MaxThreads"/>, a usable device and valid
    /// <see cref="Decoding"/> options.</summary>
    /// <exception cref="ArgumentException">An option is out of range; the message and parameter name name it.</exception>
    /// <exception cref="NotSupportedException">CUDA was asked for but is not available.</exception>
    public TranslatorOptions Validate()
    {
        ToLoadOptions(new SpecialTokenIds()).Validate();
        if (MaxBatchSize < 1) throw new ArgumentException($"MaxBatchSize must be positive, got {MaxBatchSize}.", nameof(MaxBatchSize));
        if (MaxBatchTokens < 1) throw new ArgumentException($"MaxBatchTokens must be positive, got {MaxBatchTokens}.", nameof(MaxBatchTokens));
        if (Threads is < 1 or > MaxThreads)
            throw new ArgumentException($"Threads must be within 1..{MaxThreads} (or null for LibTorch's default), got {Threads}.", nameof(Threads));
        Decoding?.Validate();
        return this;
    }

    internal ModelLoadOptions ToLoadOptions(SpecialTokenIds ids) =>
        new() { Device = Device, DType = DType, Heads = Heads, SpecialIds = ids, Quantization = Quantization };
}

/// <summary>One translated input.</summary>
/// <param name="Text">The best translation.</param>
/// <param name="Ids">Target token ids of the best translation, without <c>[SOS]</c>/<c>[EOS]</c>.</param>
/// <param name="Hypotheses">Every returned hypothesis, best first, with its text.</param>
public sealed record Translation(string Text, IReadOnlyList<int> Ids, IReadOnlyList<TranslationHypothesis> Hypotheses)
{
    /// <summary>Score of the best translation: its log-probability for greedy search and sampling, the
    /// length-normalised log-probability (log-probability / length^LengthPenalty) for beam search; 0 for empty input.</summary>
    public double Score => Hypotheses.Count > 0 ? Hypotheses[0].Hypothesis.Score : 0;

    /// <summary>Sum of the log-probabilities of the best translation's tokens (its end token included); 0 for empty input.</summary>
    public double LogProbability => Hypotheses.Count > 0 ? Hypotheses[0].Hypothesis.LogProbability : 0;
}

/// <summary>One hypothesis with its text.</summary>
/// <param name="Text">Decoded text.</param>
/// <param name="Hypothesis">Ids and scores.</param>
/// <param name="Sequence">The target sequence as Hugging Face's <c>generate</c> returns it: the decoder start token
/// first, then the generated ids, then <c>[EOS]</c> when the hypothesis finished.</param>
public sealed record TranslationHypothesis(string Text, Decoding.Hypothesis Hypothesis, IReadOnlyList<int> Sequence)
{
    /// <summary>The hypothesis's ranking score (see <see cref="Decoding.Hypothesis.Score"/>).</summary>
    public double Score => Hypothesis.Score;
}
