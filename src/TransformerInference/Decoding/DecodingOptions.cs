namespace TransformerInference.Decoding;

/// <summary>How target sequences are searched. The default is greedy decoding up to the model's length limit.</summary>
public sealed record DecodingOptions
{
    /// <summary>Most tokens generated after <c>[SOS]</c> (the <c>[EOS]</c> included). Null: as many as the model's
    /// target positions allow, at most <see cref="DefaultMaxNewTokens"/> (unless <see cref="MaxLength"/> is set).</summary>
    public int? MaxNewTokens { get; init; }

    /// <summary>Hugging Face's <c>max_length</c>: the longest target sequence counting the decoder start token, so at
    /// most <c>MaxLength - 1</c> tokens are generated. Used when <see cref="MaxNewTokens"/> is null; a value beyond the
    /// model's target positions is reduced to them. Null: no such limit.</summary>
    public int? MaxLength { get; init; }

    /// <summary>Token fed first to the decoder (Hugging Face's <c>decoder_start_token_id</c>). Null: the model's
    /// <see cref="ISeq2SeqModel.SosId"/>.</summary>
    public int? DecoderStartTokenId { get; init; }

    /// <summary>Token forced as the first generated one (Hugging Face's <c>forced_bos_token_id</c>; the target
    /// language of M2M100 and NLLB). Null: none.</summary>
    public int? ForcedBosTokenId { get; init; }

    /// <summary>Token forced as the last one the length limit allows (Hugging Face's <c>forced_eos_token_id</c>, at
    /// <c>max_length - 1</c>). Null: none.</summary>
    public int? ForcedEosTokenId { get; init; }

    /// <summary>Token sequences never generated (Hugging Face's <c>bad_words_ids</c>): a one-token entry bans that
    /// token everywhere; a longer one bans its last token after the others (the decoder start token counts as
    /// generated text). Null: none.</summary>
    public IReadOnlyList<IReadOnlyList<int>>? BadWordsIds { get; init; }

    /// <summary><c>[EOS]</c> is forbidden before this many tokens were generated (Hugging Face's
    /// <c>min_new_tokens</c>).</summary>
    public int MinNewTokens { get; init; }

    /// <summary>Hugging Face's <c>min_length</c>: <c>[EOS]</c> is forbidden while the target sequence, the decoder
    /// start token included, is shorter than this (so at least <c>MinLength - 1</c> tokens are generated). Null or
    /// at most 1: no such limit. Combines with <see cref="MinNewTokens"/>: the stricter one applies.</summary>
    public int? MinLength { get; init; }

    /// <summary>Fewest generated tokens before <c>[EOS]</c> may come: the stricter of <see cref="MinNewTokens"/>
    /// and <see cref="MinLength"/>.</summary>
    internal int MinGenerated => Math.Max(MinNewTokens, (MinLength ?? 0) - 1);

    /// <summary>Beam width; 1 is greedy (or sampling when <see cref="Sample"/> is set).</summary>
    public int BeamSize { get; init; } = 1;

    /// <summary>Hugging Face's <c>length_penalty</c>: finished beam hypotheses are ranked by
    /// <c>sum of log-probabilities / length^LengthPenalty</c>, length counting the generated tokens up to and
    /// including <c>[EOS]</c> (not the start token); 0 ranks by the raw sum, &gt; 0 favours longer ones.</summary>
    public double LengthPenalty { get; init; } = 1.0;

    /// <summary>Hugging Face's <c>early_stopping</c>: when a beam search may stop. Default
    /// <see cref="Decoding.EarlyStopping.Heuristic"/> (Hugging Face's <c>false</c>).</summary>
    public EarlyStopping EarlyStopping { get; init; }

    /// <summary>Hypotheses returned per input (Hugging Face's <c>num_return_sequences</c>; at most <see cref="BeamSize"/>).</summary>
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

    /// <summary>
    /// These options, with the token rules they leave unset (start token, forced first and last tokens, banned
    /// words) and, when no length is set, the length limit taken from <paramref name="family"/>: how a model
    /// family's generation defaults (<see cref="Loading.ModelLoader.LoadGenerationDefaults"/>) combine with a
    /// caller's search settings.
    /// </summary>
    public DecodingOptions WithRulesFrom(DecodingOptions family) => this with
    {
        DecoderStartTokenId = DecoderStartTokenId ?? family.DecoderStartTokenId,
        ForcedBosTokenId = ForcedBosTokenId ?? family.ForcedBosTokenId,
        ForcedEosTokenId = ForcedEosTokenId ?? family.ForcedEosTokenId,
        BadWordsIds = BadWordsIds ?? family.BadWordsIds,
        MaxLength = MaxNewTokens is null ? MaxLength ?? family.MaxLength : MaxLength,
    };

    /// <summary>Most tokens generated when neither <see cref="MaxNewTokens"/> nor <see cref="MaxLength"/> is set and
    /// the model allows more: the KV cache is sized for the length limit, so a config claiming huge position counts
    /// must not size it.</summary>
    public const int DefaultMaxNewTokens = 1024;

    /// <summary>Widest beam accepted (<see cref="BeamSize"/>): the cost of a step grows with it, and wider beams
    /// rarely help translation.</summary>
    public const int MaxBeamSize = 128;

    /// <summary>Checks every field: ranges, finite numbers, <see cref="BeamSize"/> at most <see cref="MaxBeamSize"/>.</summary>
    /// <exception cref="ArgumentException">A field is out of range; the message and parameter name name it.</exception>
    public DecodingOptions Validate()
    {
        void Check(bool ok, string name, object value, string rule)
        {
            if (!ok) throw new ArgumentException($"{name} {rule}, got {value}.", name);
        }
        Check(MaxNewTokens is null or > 0, nameof(MaxNewTokens), MaxNewTokens!, "must be positive");
        Check(MaxLength is null or > 1, nameof(MaxLength), MaxLength!, "must be at least 2 (the start token and one more)");
        Check(DecoderStartTokenId is null or >= 0, nameof(DecoderStartTokenId), DecoderStartTokenId!, "must not be negative");
        Check(ForcedBosTokenId is null or >= 0, nameof(ForcedBosTokenId), ForcedBosTokenId!, "must not be negative");
        Check(ForcedEosTokenId is null or >= 0, nameof(ForcedEosTokenId), ForcedEosTokenId!, "must not be negative");
        Check(BadWordsIds is null || BadWordsIds.All(b => b is { Count: > 0 } && b.All(t => t >= 0)), nameof(BadWordsIds),
            "[" + string.Join(", ", (BadWordsIds ?? Array.Empty<IReadOnlyList<int>>()).Select(b => "[" + string.Join(", ", b ?? Array.Empty<int>()) + "]")) + "]",
            "must hold non-empty lists of non-negative ids");
        Check(MinNewTokens >= 0, nameof(MinNewTokens), MinNewTokens, "must not be negative");
        Check(MinLength is null or >= 0, nameof(MinLength), MinLength!, "must not be negative");
        Check(Enum.IsDefined(EarlyStopping), nameof(EarlyStopping), EarlyStopping, "must be Heuristic, Immediate or Never");
        Check(BeamSize is >= 1 and <= MaxBeamSize, nameof(BeamSize), BeamSize, $"must be within 1..{MaxBeamSize}");
        Check(double.IsFinite(LengthPenalty), nameof(LengthPenalty), LengthPenalty, "must be a finite number");
        Check(NBest >= 1 && NBest <= BeamSize, nameof(NBest), NBest, $"must be within 1..BeamSize ({BeamSize})");
        Check(!(Sample && BeamSize > 1), nameof(Sample), Sample, "cannot be combined with beam search");
        Check(Temperature > 0 && double.IsFinite(Temperature), nameof(Temperature), Temperature, "must be positive and finite");
        Check(TopK >= 0, nameof(TopK), TopK, "must not be negative");
        Check(TopP > 0 && TopP <= 1, nameof(TopP), TopP, "must be within (0, 1]");
        Check(RepetitionPenalty > 0 && double.IsFinite(RepetitionPenalty), nameof(RepetitionPenalty), RepetitionPenalty, "must be positive and finite");
        Check(NoRepeatNgramSize >= 0, nameof(NoRepeatNgramSize), NoRepeatNgramSize, "must not be negative");
        return this;
    }

    /// <summary>Checks every field (<see cref="Validate"/>) and then against <paramref name="model"/>: token ids
    /// inside its target vocabulary and <see cref="MaxNewTokens"/> within its target positions. Search calls this
    /// first; a caller can call it once to reject options that would fail for every input.</summary>
    /// <exception cref="ArgumentException">A field is out of range; the parameter name is the field's name.</exception>
    public DecodingOptions ValidateFor(ISeq2SeqModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        Validate();
        foreach (var (id, name) in new[] { (DecoderStartTokenId, nameof(DecoderStartTokenId)),
                     (ForcedBosTokenId, nameof(ForcedBosTokenId)), (ForcedEosTokenId, nameof(ForcedEosTokenId)) })
        {
            if (id >= model.TargetVocabSize)
                throw new ArgumentException($"{name} {id} is outside the target vocabulary ({model.TargetVocabSize}).", name);
        }
        if (MaxNewTokens > model.MaxTargetLength)
            throw new ArgumentException($"MaxNewTokens {MaxNewTokens} exceeds the model's {model.MaxTargetLength} target positions.", nameof(MaxNewTokens));
        return this;
    }
}

/// <summary>When beam search stops (Hugging Face's <c>early_stopping</c>). Every mode also stops at the length limit,
/// where the beams still open become hypotheses.</summary>
public enum EarlyStopping
{
    /// <summary>Hugging Face's <c>false</c>: once <see cref="DecodingOptions.BeamSize"/> hypotheses have finished,
    /// stop when the best open beam's score divided by (tokens generated so far)^LengthPenalty is not above the
    /// worst finished score.</summary>
    Heuristic,

    /// <summary>Hugging Face's <c>true</c>: stop as soon as <see cref="DecodingOptions.BeamSize"/> hypotheses have
    /// finished.</summary>
    Immediate,

    /// <summary>Hugging Face's <c>"never"</c>: as <see cref="Heuristic"/>, but with a positive length penalty the best
    /// open beam is judged at the longest length it could reach (the length limit), so the search only stops when
    /// no open beam can still win.</summary>
    Never,
}

/// <summary>One generated target sequence.</summary>
/// <param name="Ids">Generated token ids, without <c>[SOS]</c> and <c>[EOS]</c>.</param>
/// <param name="LogProbability">Sum of the log-probabilities of the generated tokens (the <c>[EOS]</c> included).</param>
/// <param name="Score">Ranking score: the log-probability divided by length^LengthPenalty for beams, else the log-probability.</param>
/// <param name="Finished">Whether the sequence ended with <c>[EOS]</c> (false: stopped at the length limit).</param>
public sealed record Hypothesis(IReadOnlyList<int> Ids, double LogProbability, double Score, bool Finished);
