using TorchSharp;
using TransformerInference.Decoding;
using TransformerInference.Loading;
using TransformerInference.Modeling.Kernels;
using static TorchSharp.torch;

namespace TransformerInference.Modeling;

/// <summary>
/// The encoder-decoder graph for every supported model family, built from a <see cref="TransformerConfig"/> and
/// weights in our canonical naming. Inputs are id tensors; masks are boolean, true where attention is allowed.
/// Instances come from <see cref="Loading.ModelLoader"/>. Not thread-safe: use one instance per thread, or lock.
/// </summary>
public sealed class TransformerModel : ISeq2SeqModel, IDisposable
{
    private readonly Embeddings _sourceEmbeddings = null!, _targetEmbeddings = null!;
    private readonly TransformerLayer[] _encoderLayers, _decoderLayers;
    private readonly Norm? _encoderNorm, _decoderNorm; // absent without final norms
    private readonly Norm? _encoderEmbedNorm, _decoderEmbedNorm; // mBART's layernorm_embedding
    private readonly RelativePositionBias? _encoderBias, _decoderBias; // T5's relative positions
    private readonly TransformerConfig _decoderView; // the decoder's shape (heads, head width) for its cache
    private readonly LinearWeight _projection = null!; // [tgt_vocab, d_model], the target embedding when tied
    private readonly Rotary? _rotary, _decoderRotary;
    private bool _disposed;

    /// <summary>Throws <see cref="ObjectDisposedException"/> when the model has been disposed.</summary>
    internal void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    internal TransformerModel(TransformerConfig config, WeightSet w, bool fuseParallel = true)
    {
        Config = config.Validate();
        Device = w.Device;
        DType = w.DType;
        var c = config;
        var encoder = c.ForStack(c.EncoderStack);
        var decoder = _decoderView = c.ForStack(c.DecoderStack);
        _encoderLayers = new TransformerLayer[c.EncoderLayers];
        _decoderLayers = new TransformerLayer[c.DecoderLayers];
        try
        {
            if (c.Positions == PositionKind.Rotary)
            {
                var positions = Math.Max(c.MaxSourcePositions, c.MaxTargetPositions);
                _rotary = new Rotary(positions, encoder.HeadDim, c.RopeTheta, w.Device, w.DType);
                if (decoder.HeadDim != encoder.HeadDim) _decoderRotary = new Rotary(positions, decoder.HeadDim, c.RopeTheta, w.Device, w.DType);
            }
            var encoderHeads = new AttentionHeads(encoder, _rotary, w.Kernels.Cpu);
            var decoderHeads = new AttentionHeads(decoder, _decoderRotary ?? _rotary, w.Kernels.Cpu);
            _targetEmbeddings = new Embeddings(w, "tgt", c.TargetVocabSize, c.MaxTargetPositions, c);
            _sourceEmbeddings = c.SharedEmbeddings
                ? new Embeddings(w, w.Made(_targetEmbeddings.Table.alias()), "src", c.MaxSourcePositions, c)
                : new Embeddings(w, "src", c.SourceVocabSize, c.MaxSourcePositions, c);
            if (c.EmbeddingNorm)
            {
                _encoderEmbedNorm = new Norm(w, "encoder.embed_norm", c);
                _decoderEmbedNorm = new Norm(w, "decoder.embed_norm", c);
            }
            if (c.Positions == PositionKind.RelativeBuckets)
            {
                _encoderBias = new RelativePositionBias(w, "encoder", c, encoder.Heads, bidirectional: true);
                _decoderBias = new RelativePositionBias(w, "decoder", c, decoder.Heads, bidirectional: false);
            }
            for (var i = 0; i < c.EncoderLayers; i++)
                _encoderLayers[i] = new TransformerLayer(w, $"encoder.layers.{i}", encoder, encoderHeads, decoder: false, fuseParallel);
            for (var i = 0; i < c.DecoderLayers; i++)
                _decoderLayers[i] = new TransformerLayer(w, $"decoder.layers.{i}", decoder, decoderHeads, decoder: true, fuseParallel);
            if (c.FinalNorms)
            {
                _encoderNorm = new Norm(w, "encoder.norm", c);
                _decoderNorm = new Norm(w, "decoder.norm", c);
            }
            _projection = w.Linear((c.TieOutputProjection
                ? w.Made(_targetEmbeddings.Table.alias())
                : w.Take("projection_layer.proj.weight", c.TargetVocabSize, c.DModel),
                w.TakeIf(c.ProjectionBias, "projection_layer.proj.bias", c.TargetVocabSize)));
            _rawCapable = _decoderLayers.All(l => l.RawSteps);
            _stepScratch = _rawCapable ? _decoderLayers.Max(l => l.StepScratch(c.DModel)) : 0;
            w.EnsureAllTaken();
            ParameterCount = w.TakenElements;
            w.Commit();
        }
        catch
        {
            // A failed build frees what it made; the weight set frees the tensors it handed out.
            Dispose();
            throw;
        }
    }

    /// <summary>The architecture.</summary>
    public TransformerConfig Config { get; }

    /// <summary>Number of weights read from the file (a tied table counts once; computed position tables not at all).</summary>
    public long ParameterCount { get; }
    /// <inheritdoc />
    public Device Device { get; }
    /// <summary>Floating-point type of the weights and activations.</summary>
    public ScalarType DType { get; }
    /// <inheritdoc />
    public int SosId => Config.SosId;
    /// <inheritdoc />
    public int EosId => Config.EosId;
    /// <inheritdoc />
    public int PadId => Config.PadId;
    /// <inheritdoc />
    public int TargetVocabSize => Config.TargetVocabSize;
    /// <inheritdoc />
    public int MaxSourceLength => Config.MaxSourcePositions;
    /// <inheritdoc />
    public int MaxTargetLength => Config.MaxTargetPositions;

    /// <summary>Encoder: ids <c>[B,S]</c> and source mask <c>[B,1,1,S]</c> → memory <c>[B,S,d_model]</c> (after the final norm, if any).</summary>
    internal Tensor Encode(Tensor source, Tensor sourceMask)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckIds(source, Config.SourceVocabSize, MaxSourceLength, "source");
        var x = _sourceEmbeddings.Forward(source, 0);
        if (_encoderEmbedNorm is not null) x = _encoderEmbedNorm.Forward(x);
        var selfMask = WithBias(_encoderBias, sourceMask, source.shape[1], 0, source.shape[1]);
        foreach (var layer in _encoderLayers) x = layer.Forward(x, selfMask, 0, null, 0, null);
        return _encoderNorm?.Forward(x) ?? x;
    }

    /// <summary>Decoder over a whole target prefix without a cache (the reference path): memory, source mask,
    /// target ids <c>[B,T]</c> and target mask <c>[B|1,1,T,T]</c> → hidden states <c>[B,T,d_model]</c>.</summary>
    internal Tensor Decode(Tensor memory, Tensor sourceMask, Tensor target, Tensor targetMask)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckIds(target, TargetVocabSize, MaxTargetLength, "target");
        var x = _targetEmbeddings.Forward(target, 0);
        if (_decoderEmbedNorm is not null) x = _decoderEmbedNorm.Forward(x);
        var selfMask = WithBias(_decoderBias, targetMask, target.shape[1], 0, target.shape[1]);
        for (var i = 0; i < _decoderLayers.Length; i++)
        {
            var (k, v) = _decoderLayers[i].CrossAttention!.ProjectMemory(memory);
            x = _decoderLayers[i].Forward(x, selfMask, 0, null, i, (k, v, sourceMask));
        }
        return _decoderNorm?.Forward(x) ?? x;
    }

    /// <summary>Output projection: hidden states → scores over the target vocabulary (log-probabilities when the
    /// family's projection applies log-softmax).</summary>
    internal Tensor Project(Tensor hidden)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (Config.OutputScale != 1.0)
        {
            using var scale = Config.OutputScale.ToScalar(); // held until the native call returns (see Held)
            hidden = hidden.mul(scale);
        }
        var scores = _projection.Forward(hidden);
        return Config.OutputLogSoftmax ? scores.log_softmax(-1) : scores;
    }

    /// <inheritdoc />
    public KvCache Start(Tensor sourceIds, long capacity)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(sourceIds);
        if (capacity < 1 || capacity > MaxTargetLength)
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, $"The cache capacity must be within 1..{MaxTargetLength}.");
        using var scope = NewDisposeScope();
        var mask = Masks.SourceKeyMask(sourceIds, PadId);
        var memory = Encode(sourceIds, mask);
        var cache = new KvCache(_decoderLayers.Length, sourceIds.shape[0], _decoderView.EffectiveKvHeads, capacity,
            _decoderView.HeadDim, mask, DType, Device);
        try
        {
            for (var i = 0; i < _decoderLayers.Length; i++)
            {
                var (k, v) = _decoderLayers[i].CrossAttention!.ProjectMemory(memory);
                cache.SetCross(i, k, v);
            }
            return cache;
        }
        catch
        {
            cache.Dispose();
            throw;
        }
    }

    /// <summary>Decoder on new target ids <c>[B,T]</c> (on the CPU or the model's device) placed after the cached positions; appends their keys and
    /// values to <paramref name="cache"/> and returns hidden states <c>[B,T,d_model]</c>.</summary>
    internal Tensor DecodeStep(Tensor target, KvCache cache)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckIds(target, TargetVocabSize, MaxTargetLength, "target");
        ArgumentNullException.ThrowIfNull(cache);
        cache.ThrowIfDisposed();
        var shape = target.shape; // [B, T]; every Tensor.shape read is a native call and a new array
        if (shape[0] != cache.BatchSize)
            throw new ArgumentException($"The target has {shape[0]} rows; the cache holds {cache.BatchSize}.", nameof(target));
        if (cache.Length + shape[1] > cache.Capacity)
            throw new ArgumentException($"The KV cache holds {cache.Capacity} positions; {cache.Length + shape[1]} were asked for.", nameof(target));
        // Ids built on the host are checked there (no device reduction and sync per step) and then uploaded.
        if (target.device_type != Device.type || target.device_index != Device.index) target = target.to(Device);
        var offset = cache.Length;
        var count = shape[1];
        if (cache.RowLength + count > MaxTargetLength)
            throw new ArgumentException($"The target would reach {cache.RowLength + count} positions; the model has {MaxTargetLength}.", nameof(target));
        Tensor x;
        Tensor? mask;
        if (cache.Ragged)
        {
            // Rows that joined a running batch: each has its own positions, and its self-attention starts at its start.
            // Relative position biases read distances on the shared axis, which are each row's own distances.
            if (count != 1) throw new ArgumentException("Rows that started at different steps decode one token at a time.", nameof(target));
            cache.BeginRaggedStep();
            var (positions, keyMask) = cache.RaggedStep!.Value;
            x = _targetEmbeddings.Forward(target, positions);
            mask = keyMask;
        }
        else
        {
            x = _targetEmbeddings.Forward(target, offset);
            mask = count == 1 ? null : Masks.Causal(count, offset, Device);
        }
        if (_decoderEmbedNorm is not null) x = _decoderEmbedNorm.Forward(x);
        mask = WithBias(_decoderBias, mask, count, offset, offset + count);
        if (count == 1 && RawSteps && _decoderBias is null && x.is_contiguous() && RawMasks(mask, cache))
            StepLayers(x, mask, cache);
        else
        {
            for (var i = 0; i < _decoderLayers.Length; i++)
            {
                var (k, v) = cache.Cross(i);
                x = _decoderLayers[i].Forward(x, mask, offset, cache, i, (k, v, cache.SourceMask));
            }
        }
        cache.Advance(count);
        return _decoderNorm?.Forward(x) ?? x;
    }

    private readonly bool _rawCapable;
    private readonly long _stepScratch; // floats per row of the raw step's scratch

    /// <summary>Whether decode steps run every decoder layer on raw memory (<see cref="TransformerLayer.Step"/>): when
    /// every layer has our CPU kernels, unless <see cref="PerTensorSteps"/>.</summary>
    internal bool RawSteps => _rawCapable && !PerTensorSteps;

    /// <summary>Turns the raw step off (tests compare it with the per-tensor path); it cannot turn it on for a model
    /// whose layers lack the kernels.</summary>
    internal bool PerTensorSteps { get; set; }

    /// <summary>Decode steps that took the raw path (tests).</summary>
    internal long RawStepCount { get; private set; }

    /// <summary>Whether the raw step can read the self-attention mask (this step's <c>Length + 1</c> positions), the
    /// source mask and the cross-attention keys/values (contiguous, one source width) of every layer.</summary>
    private bool RawMasks(Tensor? mask, KvCache cache)
    {
        var batch = cache.BatchSize;
        if (_decoderLayers.Length == 0 || !AttentionHeads.KernelMask(mask, batch, cache.Length + 1)) return false;
        var source = cache.Cross(0).Keys.shape[2];
        return AttentionHeads.KernelMask(cache.SourceMask, batch, source) && ContiguousCross(cache, batch, source);
    }

    private bool ContiguousCross(KvCache cache, long batch, long source)
    {
        for (var i = 0; i < _decoderLayers.Length; i++)
        {
            var (k, v) = cache.Cross(i);
            var shape = k.shape; // one native call and one array per read
            if (!k.is_contiguous() || !v.is_contiguous() || shape[0] != batch || shape[2] != source || !v.shape.AsSpan().SequenceEqual(shape))
                return false;
        }
        return true;
    }

    /// <summary>One token per row through every decoder layer on raw memory: <paramref name="x"/> [B, 1, d_model]
    /// (a fresh tensor) is updated in place; the scratch rows come from the shared array pool.</summary>
    private unsafe void StepLayers(Tensor x, Tensor? mask, KvCache cache)
    {
        RawStepCount++;
        var batch = x.shape[0];
        long d = Config.DModel;
        var (selfMask, selfRow) = AttentionHeads.MaskPointer(mask);
        var (sourceMask, sourceRow) = AttentionHeads.MaskPointer(cache.SourceMask);
        var size = batch * _stepScratch;
        var scratch = System.Buffers.ArrayPool<float>.Shared.Rent(checked((int)size));
        try
        {
            fixed (float* s = scratch)
            {
                var rows = (float*)Kernels.PackedLinear.Pointer(x);
                for (var i = 0; i < _decoderLayers.Length; i++)
                    _decoderLayers[i].Step(rows, batch, d, cache, i, (byte*)selfMask, selfRow, (byte*)sourceMask, sourceRow, s);
            }
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(scratch);
        }
    }

    /// <inheritdoc />
    public Tensor Step(Tensor tokens, KvCache cache)
    {
        // The step's own temporaries (hidden states, views) are freed here, whether or not the caller has a scope.
        using var scope = NewDisposeScope();
        var hidden = DecodeStep(tokens, cache);
        var last = hidden.select(1, hidden.shape[1] - 1);
        var scores = Project(last);
        return (scores.dtype == ScalarType.Float32 ? scores : scores.to(ScalarType.Float32)).MoveToOuterDisposeScope();
    }

    /// <summary>The self-attention mask with a relative position bias added (a float mask: the bias where attention
    /// is allowed, the lowest float where not), or the boolean mask unchanged when the stack has no bias.</summary>
    private Tensor? WithBias(RelativePositionBias? bias, Tensor? mask, long queries, long offset, long keys)
    {
        if (bias is null) return mask;
        var scores = bias.Forward(queries, offset, keys).to(DType);
        if (mask is null) return scores;
        // As Hugging Face: the lowest float added where attention is not allowed.
        using var lowest = GetMinValue(DType).ToScalar(); // held until the native call returns (see Held)
        return Held.Add(scores, mask.logical_not().to(DType).mul(lowest));
    }

    private static double GetMinValue(ScalarType dtype) => dtype switch
    {
        ScalarType.Float16 => -65504.0,
        ScalarType.BFloat16 => -3.3895313892515355e38,
        ScalarType.Float64 => double.MinValue,
        _ => float.MinValue,
    };

    /// <summary>The model boundary: ids must be an int64 <c>[batch, length]</c> tensor within the length limit and
    /// every id inside the vocabulary, so no input reaches a native index error. CPU ids are read in place; ids on
    /// a GPU cost one small reduction and one host sync.</summary>
    private static void CheckIds(Tensor ids, int vocab, int maxLength, string what)
    {
        ArgumentNullException.ThrowIfNull(ids);
        if (ids.dim() != 2) throw new ArgumentException($"The {what} ids must be [batch, length], got [{string.Join(", ", ids.shape)}].", nameof(ids));
        if (ids.dtype != ScalarType.Int64) throw new ArgumentException($"The {what} ids must be int64, got {ids.dtype}.", nameof(ids));
        if (ids.shape[1] > maxLength)
            throw new ArgumentException($"The {what} has {ids.shape[1]} positions; the model allows at most {maxLength}.", nameof(ids));
        if (ids.shape[0] == 0 || ids.shape[1] == 0)
            throw new ArgumentException($"The {what} ids are empty: [{string.Join(", ", ids.shape)}].", nameof(ids));
        var (low, high) = Range(ids);
        if (low < 0 || high >= vocab)
            throw new ArgumentException($"The {what} ids must lie in [0, {vocab}); got {(low < 0 ? low : high)}.", nameof(ids));
    }

    /// <summary>The smallest and largest value of a non-empty int64 tensor: read in place on the CPU, one small
    /// reduction and one host sync elsewhere.</summary>
    internal static (long Low, long High) Range(Tensor values)
    {
        if (values.device_type == DeviceType.CPU && values.is_contiguous())
        {
            long low = long.MaxValue, high = long.MinValue;
            foreach (var v in values.data<long>())
            {
                low = Math.Min(low, v);
                high = Math.Max(high, v);
            }
            return (low, high);
        }
        using var scope = NewDisposeScope();
        var range = stack(new[] { values.min(), values.max() }).cpu();
        return (range[0].item<long>(), range[1].item<long>());
    }

    /// <summary>Frees every weight tensor.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        // Null-tolerant: also called on a partly built model.
        _sourceEmbeddings?.Dispose();
        _targetEmbeddings?.Dispose();
        foreach (var l in _encoderLayers) l?.Dispose();
        foreach (var l in _decoderLayers) l?.Dispose();
        _encoderNorm?.Dispose();
        _decoderNorm?.Dispose();
        _encoderEmbedNorm?.Dispose();
        _decoderEmbedNorm?.Dispose();
        _encoderBias?.Dispose();
        _decoderBias?.Dispose();
        _decoderRotary?.Dispose();
        _projection?.Dispose();
        _rotary?.Dispose();
    }
}
