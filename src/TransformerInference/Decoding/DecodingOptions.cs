namespace TransformerInference.Decoding;

/// <summary>How target sequences are searched. The default is greedy decoding up to the model's length limit.</summary>
public sealed record DecodingOptions
{
    /// <summary>Most tokens generated after <c>[SOS]</c> (the <c>[EOS]</c> included). Null: as many as the model's
    /// target positions allow.</summary>
    public int? MaxNewTokens { get; init; }

    /// <summary><c>[EOS]</c> is forbidden before this many tokens were generated.</summary>
    public int MinNewTokens { get; init; }

    /// <summary>Beam width; 1 is greedy (or sampling when <see cref="Sample"/> is set).</summary>
    public int BeamSize { get; init; } = 1;

    /// <summary>Beam hypotheses are ranked by <c>log-probability / length^LengthPenalty</c>; 0 ranks by the raw sum.</summary>
    public double LengthPenalty { get; init; } = 1.0;

    /// <summary>Beam search stops as soon as <see cref="BeamSize"/> hypotheses have finished (faster, may miss a
    /// better longer one). Default false: it goes on while the best live beam, ranked at its current length, beats
    /// the worst kept hypothesis — exact with <see cref="LengthPenalty"/> 0 (scores only fall as beams grow), the
    /// usual heuristic otherwise.</summary>
    public bool EarlyStopping { get; init; }

    /// <summary>Hypotheses returned per input (at most <see cref="BeamSize"/>).</summary>
    public int NBest { get; init; } = 1;

    /// <summary>Sample the next token instead of taking the most likely one.</summary>
    public bool Sample { get; init; }

    /// <summary>Sampling temperature (&gt; 0).</summary>
    public double Temperature { get; init; } = 1.0;

    /// <summary>Sample only among the k most likely tokens (0: no limit).</summary>
    public int TopK { get; init; }

    /// <summary>Sample only among the most likely tokens whose probabilities add up to this (1: no limit).</summary>
    public double TopP { get; init; } = 1.0;

    /// <summary>Seed of the sampler, for reproducible sampling. Null: a random seed.</summary>
    public int? Seed { get; init; }

    /// <summary>Penalty (&gt; 1 discourages) for tokens already generated, CTRL's rule: a positive logit is divided
    /// by it, a negative one multiplied (on raw logits for greedy and sampling, on log-probabilities for beams, as
    /// Hugging Face does).</summary>
    public double RepetitionPenalty { get; init; } = 1.0;

    /// <summary>No n-gram of this size is generated twice (0: off).</summary>
    public int NoRepeatNgramSize { get; init; }

    /// <summary>Keep generating after <c>[EOS]</c> up to <see cref="MaxNewTokens"/> (fixed-length runs for benchmarks).</summary>
    public bool IgnoreEos { get; init; }

    /// <summary>Checks every field.</summary>
    /// <exception cref="ArgumentException">A field is out of range; the message names it.</exception>
    public DecodingOptions Validate()
    {
        void Check(bool ok, string name, object value, string rule)
        {
            if (!ok) throw new ArgumentException($"{name} {rule}, got {value}.", name);
        }
        Check(MaxNewTokens is null or > 0, nameof(MaxNewTokens), MaxNewTokens!, "must be positive");
        Check(MinNewTokens >= 0, nameof(MinNewTokens), MinNewTokens, "must not be negative");
        Check(BeamSize >= 1, nameof(BeamSize), BeamSize, "must be at least 1");
        Check(NBest >= 1 && NBest <= BeamSize, nameof(NBest), NBest, $"must be within 1..BeamSize ({BeamSize})");
        Check(!(Sample && BeamSize > 1), nameof(Sample), Sample, "cannot be combined with beam search");
        Check(Temperature > 0, nameof(Temperature), Temperature, "must be positive");
        Check(TopK >= 0, nameof(TopK), TopK, "must not be negative");
        Check(TopP > 0 && TopP <= 1, nameof(TopP), TopP, "must be within (0, 1]");
        Check(RepetitionPenalty > 0, nameof(RepetitionPenalty), RepetitionPenalty, "must be positive");
        Check(NoRepeatNgramSize >= 0, nameof(NoRepeatNgramSize), NoRepeatNgramSize, "must not be negative");
        return this;
    }
}

/// <summary>One generated target sequence.</summary>
/// <param name="Ids">Generated token ids, without <c>[SOS]</c> and <c>[EOS]</c>.</param>
/// <param name="LogProbability">Sum of the log-probabilities of the generated tokens (the <c>[EOS]</c> included).</param>
/// <param name="Score">Ranking score: the log-probability divided by length^LengthPenalty for beams, else the log-probability.</param>
/// <param name="Finished">Whether the sequence ended with <c>[EOS]</c> (false: stopped at the length limit).</param>
public sealed record Hypothesis(IReadOnlyList<int> Ids, double LogProbability, double Score, bool Finished);
