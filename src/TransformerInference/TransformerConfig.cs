namespace TransformerInference;

/// <summary>How a layer combines attention and feed-forward.</summary>
public enum BlockKind
{
    /// <summary>Pre-norm residual sub-blocks one after another (the seed): <c>x + SA(N0(x))</c>, then <c>x + FFN(N1(x))</c>.</summary>
    Serial,
    /// <summary>GPT-J / PaLM parallel block: <c>x + SA(N(x)) + FFN(N(x))</c>; cross-attention stays a separate sub-block.</summary>
    Parallel,
}

/// <summary>Where each sub-block's normalisation sits relative to its residual connection.</summary>
public enum NormPlacement
{
    /// <summary>Pre-norm (the seed, M2M100/NLLB): <c>x + sublayer(norm(x))</c>.</summary>
    Pre,
    /// <summary>Post-norm (the original Transformer, Marian): <c>norm(x + sublayer(x))</c>; serial blocks only.</summary>
    Post,
}

/// <summary>The normalisation used in every layer and in the two final norms.</summary>
public enum NormKind
{
    /// <summary>The seed's LayerNormalization: <c>alpha (x - mean) / (std + eps) + bias</c> with the unbiased std.</summary>
    Seed,
    /// <summary><c>torch.nn.LayerNorm</c>: biased variance, eps inside the square root.</summary>
    LayerNorm,
    /// <summary>RMSNorm: <c>weight x / sqrt(mean(x²) + eps)</c>.</summary>
    RmsNorm,
}

/// <summary>How token positions enter the model.</summary>
public enum PositionKind
{
    /// <summary>Interleaved sine/cosine table added to the embeddings (the seed).</summary>
    Sinusoidal,
    /// <summary>A learned position table added to the embeddings.</summary>
    Learned,
    /// <summary>Rotary embeddings (interleaved-pair layout) on self-attention queries and keys.</summary>
    Rotary,
    /// <summary>Computed (not stored) sinusoids, Marian's layout: column <c>i</c> of the first half is
    /// <c>sin(p / 10000^(2i/d_model))</c>, the second half the cosines; position <c>p</c> starts at
    /// <see cref="TransformerConfig.PositionOffset"/>.</summary>
    SinusoidalHalves,
    /// <summary>Computed fairseq sinusoids (M2M100, NLLB): sines then cosines with frequencies
    /// <c>exp(-i·ln 10000 / (d_model/2 - 1))</c>; position <c>p</c> starts at <see cref="TransformerConfig.PositionOffset"/>
    /// (fairseq: padding id + 1) and tokens equal to <see cref="TransformerConfig.PadId"/> get a zero position vector.</summary>
    Fairseq,
}

/// <summary>The feed-forward network of each layer.</summary>
public enum FeedForwardKind
{
    /// <summary><c>linear_2(relu(linear_1(x)))</c>.</summary>
    Relu,
    /// <summary><c>linear_2(gelu(linear_1(x)))</c> with the exact (erf) GELU.</summary>
    Gelu,
    /// <summary><c>w2(silu(w1(x)) * w3(x))</c>.</summary>
    SwiGlu,
    /// <summary><c>linear_2(silu(linear_1(x)))</c> (Hugging Face's <c>swish</c>/<c>silu</c>, Marian).</summary>
    Silu,
}

/// <summary>
/// Every hyperparameter and architecture switch of the encoder-decoder graph, validated in one place.
/// A model family is one of these plus a parameter-name map, never a copy of the layers.
/// </summary>
public sealed record TransformerConfig
{
    /// <summary>Source vocabulary size.</summary>
    public required int SourceVocabSize { get; init; }
    /// <summary>Target vocabulary size (rows of the output projection).</summary>
    public required int TargetVocabSize { get; init; }
    /// <summary>Model width.</summary>
    public required int DModel { get; init; }
    /// <summary>Feed-forward hidden width.</summary>
    public required int DFF { get; init; }
    /// <summary>Number of encoder layers.</summary>
    public required int EncoderLayers { get; init; }
    /// <summary>Number of decoder layers.</summary>
    public required int DecoderLayers { get; init; }
    /// <summary>Query heads.</summary>
    public int Heads { get; init; } = 8;
    /// <summary>Key/value heads: equal to <see cref="Heads"/> for classic attention, 1 for multi-query, in between for grouped-query. Null means equal to <see cref="Heads"/>.</summary>
    public int? KvHeads { get; init; }
    /// <summary>Longest source sequence, special tokens included (rows of the source position table).</summary>
    public required int MaxSourcePositions { get; init; }
    /// <summary>Longest target sequence, <c>[SOS]</c> included (rows of the target position table).</summary>
    public required int MaxTargetPositions { get; init; }
    /// <summary>Layer formulation.</summary>
    public BlockKind Block { get; init; } = BlockKind.Serial;
    /// <summary>Pre-norm (default) or post-norm sub-blocks.</summary>
    public NormPlacement NormPlacement { get; init; } = NormPlacement.Pre;
    /// <summary>The encoder and decoder stacks end with a norm (<c>encoder.norm</c>, <c>decoder.norm</c>); default true.
    /// False for post-norm families such as Marian.</summary>
    public bool FinalNorms { get; init; } = true;
    /// <summary>Normalisation kind.</summary>
    public NormKind Norm { get; init; } = NormKind.Seed;
    /// <summary>Epsilon of the normalisation.</summary>
    public double NormEps { get; init; } = 1e-6;
    /// <summary>Position scheme.</summary>
    public PositionKind Positions { get; init; } = PositionKind.Sinusoidal;
    /// <summary>Index of the first position of a sequence in computed sinusoid tables
    /// (<see cref="PositionKind.SinusoidalHalves"/>, <see cref="PositionKind.Fairseq"/>); default 0.</summary>
    public int PositionOffset { get; init; }
    /// <summary>Rotary base (used only with <see cref="PositionKind.Rotary"/>).</summary>
    public double RopeTheta { get; init; } = 10000.0;
    /// <summary>Feed-forward kind.</summary>
    public FeedForwardKind FeedForward { get; init; } = FeedForwardKind.Relu;
    /// <summary>Feed-forward linears have biases.</summary>
    public bool FeedForwardBias { get; init; } = true;
    /// <summary>Attention projections (q, k, v, o) have biases (the seed author's own checkpoints).</summary>
    public bool AttentionBias { get; init; }
    /// <summary>Token embeddings are multiplied by sqrt(d_model).</summary>
    public bool EmbeddingScale { get; init; } = true;
    /// <summary>The encoder reads the target embedding table (one table, <c>tgt_embed</c>); needs equal vocabularies.</summary>
    public bool SharedEmbeddings { get; init; }
    /// <summary>Logits use the target embedding matrix (no projection weights).</summary>
    public bool TieOutputProjection { get; init; }
    /// <summary>The output projection has a bias (with a tied projection: a separate logits bias, as Marian's
    /// <c>final_logits_bias</c>).</summary>
    public bool ProjectionBias { get; init; } = true;
    /// <summary>The projection layer returns log-probabilities (log-softmax) rather than raw logits.</summary>
    public bool OutputLogSoftmax { get; init; }
    /// <summary>Id of <c>[UNK]</c>.</summary>
    public int UnkId { get; init; }
    /// <summary>Id of <c>[PAD]</c>.</summary>
    public int PadId { get; init; } = 1;
    /// <summary>Id of <c>[SOS]</c>.</summary>
    public int SosId { get; init; } = 2;
    /// <summary>Id of <c>[EOS]</c>.</summary>
    public int EosId { get; init; } = 3;

    /// <summary>Key/value heads actually used.</summary>
    public int EffectiveKvHeads => KvHeads ?? Heads;
    /// <summary>Width of one attention head.</summary>
    public int HeadDim => DModel / Heads;

    /// <summary>Checks every field and their relations.</summary>
    /// <exception cref="ArgumentException">A field is out of range, with its name and value in the message.</exception>
    public TransformerConfig Validate()
    {
        static void Positive(int value, string name)
        {
            if (value <= 0) throw new ArgumentException($"{name} must be positive, got {value}.", name);
        }
        Positive(SourceVocabSize, nameof(SourceVocabSize));
        Positive(TargetVocabSize, nameof(TargetVocabSize));
        Positive(DModel, nameof(DModel));
        Positive(DFF, nameof(DFF));
        Positive(EncoderLayers, nameof(EncoderLayers));
        Positive(DecoderLayers, nameof(DecoderLayers));
        Positive(Heads, nameof(Heads));
        Positive(EffectiveKvHeads, nameof(KvHeads));
        Positive(MaxSourcePositions, nameof(MaxSourcePositions));
        Positive(MaxTargetPositions, nameof(MaxTargetPositions));
        if (DModel % Heads != 0)
            throw new ArgumentException($"The head count {Heads} does not divide d_model {DModel}.", nameof(Heads));
        if (Heads % EffectiveKvHeads != 0)
            throw new ArgumentException($"The key/value head count {EffectiveKvHeads} does not divide the head count {Heads}.", nameof(KvHeads));
        if (Positions == PositionKind.Rotary && HeadDim % 2 != 0)
            throw new ArgumentException($"Rotary positions need an even head width, got {HeadDim}.", nameof(Positions));
        if ((Positions is PositionKind.Sinusoidal or PositionKind.SinusoidalHalves) && DModel % 2 != 0)
            throw new ArgumentException($"Sinusoidal positions need an even d_model, got {DModel}.", nameof(Positions));
        if (!(NormEps >= 0)) throw new ArgumentException($"NormEps must be non-negative, got {NormEps}.", nameof(NormEps));
        if (Positions == PositionKind.Fairseq && (DModel % 2 != 0 || DModel < 4))
            throw new ArgumentException($"Fairseq positions need an even d_model of at least 4, got {DModel}.", nameof(Positions));
        if (PositionOffset < 0)
            throw new ArgumentException($"PositionOffset must not be negative, got {PositionOffset}.", nameof(PositionOffset));
        if (NormPlacement == NormPlacement.Post && Block != BlockKind.Serial)
            throw new ArgumentException("Post-norm needs serial blocks.", nameof(NormPlacement));
        if (SharedEmbeddings && SourceVocabSize != TargetVocabSize)
            throw new ArgumentException($"Shared embeddings need equal vocabularies, got {SourceVocabSize} source and {TargetVocabSize} target.", nameof(SharedEmbeddings));
        foreach (var (id, name) in new[] { (UnkId, nameof(UnkId)), (PadId, nameof(PadId)), (SosId, nameof(SosId)), (EosId, nameof(EosId)) })
        {
            if (id < 0 || id >= TargetVocabSize || id >= SourceVocabSize)
                throw new ArgumentException($"{name} {id} is outside the vocabularies ({SourceVocabSize} source, {TargetVocabSize} target).", name);
        }
        return this;
    }
}
