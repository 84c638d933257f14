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
    /// <summary>T5's relative position buckets: a learned bias per head and bucket of the key-minus-query distance, added
    /// to the self-attention scores (bidirectional buckets in the encoder, causal in the decoder), held by the first
    /// layer of each stack and shared by the others; nothing is added to the embeddings.</summary>
    RelativeBuckets,
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
    /// <summary><c>w2(gelu_tanh(w1(x)) * w3(x))</c> with the tanh-approximated GELU (T5 v1.1 / Flan-T5 <c>gated-gelu</c>).</summary>
    GatedGelu,
}

/// <summary>The shape of one stack (encoder or decoder) where real configurations shape the two differently.</summary>
public sealed record StackConfig
{
    /// <summary>Number of layers.</summary>
    public required int Layers { get; init; }
    /// <summary>Query heads of the stack's attention blocks (the decoder's also for cross-attention).</summary>
    public required int Heads { get; init; }
    /// <summary>Key/value heads; null means equal to <see cref="Heads"/>.</summary>
    public int? KvHeads { get; init; }
    /// <summary>Feed-forward hidden width.</summary>
    public required int DFF { get; init; }
    /// <summary>Width of one attention head; null means d_model / heads (T5's <c>d_kv</c> may differ).</summary>
    public int? HeadDim { get; init; }

    /// <summary>Key/value heads actually used.</summary>
    public int EffectiveKvHeads => KvHeads ?? Heads;
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
    /// <summary>The encoder's shape when it differs from the shared fields (<see cref="EncoderLayers"/>,
    /// <see cref="Heads"/>, <see cref="KvHeads"/>, <see cref="DFF"/>); its <c>Layers</c> must equal <see cref="EncoderLayers"/>.</summary>
    public StackConfig? Encoder { get; init; }
    /// <summary>The decoder's shape when it differs from the shared fields; its <c>Layers</c> must equal <see cref="DecoderLayers"/>.</summary>
    public StackConfig? Decoder { get; init; }
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
    /// (<see cref="PositionKind.SinusoidalHalves"/>, <see cref="PositionKind.Fairseq"/>) and in learned tables
    /// (<see cref="PositionKind.Learned"/>: the table has this many extra rows first; mBART: 2); default 0.</summary>
    public int PositionOffset { get; init; }
    /// <summary>Buckets of <see cref="PositionKind.RelativeBuckets"/> (T5 <c>relative_attention_num_buckets</c>).</summary>
    public int RelativeBuckets { get; init; } = 32;
    /// <summary>Distance beyond which <see cref="PositionKind.RelativeBuckets"/> share the last bucket
    /// (T5 <c>relative_attention_max_distance</c>).</summary>
    public int RelativeMaxDistance { get; init; } = 128;
    /// <summary>Attention scores are divided by sqrt(head width) (default); T5 does not scale them.</summary>
    public bool AttentionScaling { get; init; } = true;
    /// <summary>A norm after embeddings and positions in both stacks (mBART's <c>layernorm_embedding</c>).</summary>
    public bool EmbeddingNorm { get; init; }
    /// <summary>Factor on the decoder output before the projection (T5 with a tied <c>lm_head</c>: d_model^-0.5); default 1.</summary>
    public double OutputScale { get; init; } = 1.0;
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
    /// <summary>Width of one attention head (of the shared fields; per stack see <see cref="EncoderStack"/>).</summary>
    public int HeadDim => StackHeadDim ?? DModel / Heads;
    /// <summary>Set in a stack's view (<see cref="ForStack"/>) when the stack names its head width.</summary>
    internal int? StackHeadDim { get; init; }
    /// <summary>The encoder's shape: <see cref="Encoder"/>, or the shared fields.</summary>
    public StackConfig EncoderStack => Encoder ?? new StackConfig { Layers = EncoderLayers, Heads = Heads, KvHeads = KvHeads, DFF = DFF };
    /// <summary>The decoder's shape: <see cref="Decoder"/>, or the shared fields.</summary>
    public StackConfig DecoderStack => Decoder ?? new StackConfig { Layers = DecoderLayers, Heads = Heads, KvHeads = KvHeads, DFF = DFF };
    /// <summary>Width of one attention head of a stack.</summary>
    public int HeadDimOf(StackConfig stack) => stack.HeadDim ?? DModel / stack.Heads;

    /// <summary>This config with the shared fields set to one stack's shape: what that stack's layers read.</summary>
    internal TransformerConfig ForStack(StackConfig stack) => this with
    {
        Heads = stack.Heads,
        KvHeads = stack.KvHeads,
        DFF = stack.DFF,
        StackHeadDim = stack.HeadDim,
        Encoder = null,
        Decoder = null,
    };

    /// <summary>The fewest weights (elements) a model of this shape has: embeddings, stored position tables, the
    /// attention and feed-forward products of every layer, an untied projection. Loaders compare it with the weights
    /// actually present before building anything, so a config claiming a billion layers or positions fails fast.</summary>
    internal double MinimumWeightCount()
    {
        double d = DModel;
        double Stack(StackConfig stack, int attentions)
        {
            double headDim = HeadDimOf(stack);
            var attention = 2 * d * stack.Heads * headDim + 2 * d * stack.EffectiveKvHeads * headDim;
            var feedForward = (FeedForward is FeedForwardKind.SwiGlu or FeedForwardKind.GatedGelu ? 3 : 2) * d * stack.DFF;
            return (double)stack.Layers * (attentions * attention + feedForward);
        }
        var count = (double)TargetVocabSize * d + (SharedEmbeddings ? 0 : (double)SourceVocabSize * d)
            + Stack(EncoderStack, 1) + Stack(DecoderStack, 2)
            + (TieOutputProjection ? 0 : (double)TargetVocabSize * d);
        if (Positions is PositionKind.Learned or PositionKind.Sinusoidal) count += ((double)MaxSourcePositions + MaxTargetPositions) * d;
        return count;
    }

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
        if (Encoder is null || Decoder is null)
        {
            Positive(Heads, nameof(Heads));
            Positive(EffectiveKvHeads, nameof(KvHeads));
        }
        Positive(MaxSourcePositions, nameof(MaxSourcePositions));
        Positive(MaxTargetPositions, nameof(MaxTargetPositions));
        if (Encoder is { } e && e.Layers != EncoderLayers)
            throw new ArgumentException($"Encoder.Layers {e.Layers} differs from EncoderLayers {EncoderLayers}.", nameof(Encoder));
        if (Decoder is { } d && d.Layers != DecoderLayers)
            throw new ArgumentException($"Decoder.Layers {d.Layers} differs from DecoderLayers {DecoderLayers}.", nameof(Decoder));
        foreach (var (stack, name) in new[] { (EncoderStack, nameof(Encoder)), (DecoderStack, nameof(Decoder)) })
        {
            var heads = Encoder is null && Decoder is null ? nameof(Heads) : name;
            Positive(stack.DFF, name + ".DFF");
            if (stack.Heads <= 0) throw new ArgumentException($"{name} heads must be positive, got {stack.Heads}.", heads);
            if (stack.EffectiveKvHeads <= 0) throw new ArgumentException($"{name} key/value heads must be positive, got {stack.EffectiveKvHeads}.", Encoder is null && Decoder is null ? nameof(KvHeads) : name);
            if (stack.HeadDim is { } headDim)
            {
                if (headDim <= 0) throw new ArgumentException($"{name} head width must be positive, got {headDim}.", name);
            }
            else if (DModel % stack.Heads != 0)
                throw new ArgumentException($"The head count {stack.Heads} does not divide d_model {DModel}.", heads);
            if (stack.Heads % stack.EffectiveKvHeads != 0)
                throw new ArgumentException($"The key/value head count {stack.EffectiveKvHeads} does not divide the head count {stack.Heads}.", Encoder is null && Decoder is null ? nameof(KvHeads) : name);
            if (Positions == PositionKind.Rotary && HeadDimOf(stack) % 2 != 0)
                throw new ArgumentException($"Rotary positions need an even head width, got {HeadDimOf(stack)}.", nameof(Positions));
            if (Positions == PositionKind.RelativeBuckets && stack.EffectiveKvHeads != stack.Heads)
                throw new ArgumentException("Relative position buckets need as many key/value heads as query heads.", nameof(Positions));
        }
        if (Positions == PositionKind.RelativeBuckets && (RelativeBuckets < 2 || RelativeMaxDistance < RelativeBuckets / 2 + 1))
            throw new ArgumentException($"Relative position buckets need at least 2 buckets and a max distance above half the bucket count, got {RelativeBuckets} and {RelativeMaxDistance}.", nameof(RelativeBuckets));
        if (!(OutputScale > 0) || double.IsInfinity(OutputScale))
            throw new ArgumentException($"OutputScale must be positive and finite, got {OutputScale}.", nameof(OutputScale));
        if ((Positions is PositionKind.Sinusoidal or PositionKind.SinusoidalHalves) && DModel % 2 != 0)
            throw new ArgumentException($"Sinusoidal positions need an even d_model, got {DModel}.", nameof(Positions));
        if (!(NormEps >= 0) || !double.IsFinite(NormEps)) throw new ArgumentException($"NormEps must be non-negative and finite, got {NormEps}.", nameof(NormEps));
        if (!(RopeTheta > 0) || !double.IsFinite(RopeTheta)) throw new ArgumentException($"RopeTheta must be positive and finite, got {RopeTheta}.", nameof(RopeTheta));
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
