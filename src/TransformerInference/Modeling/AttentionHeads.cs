using TransformerInference.Decoding;
using TransformerInference.Modeling.Kernels;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace TransformerInference.Modeling;

/// <summary>
/// The weight-free part of multi-head / grouped-query attention: head split, rotary, KV-cache append, scaled dot
/// product and head merge. Query head h reads key/value head h / (H/G); queries are laid out as
/// <c>[B, G, (H/G)·T, d_k]</c> so grouped keys and values are read in place, never repeated.
/// On our CPU kernels a decode step (one query per row, a boolean mask or none, no rotary) runs
/// <see cref="AttentionKernel{TOps, TV}"/> instead, the self-attention keys and values written straight into the
/// cache; many queries, float masks (position biases), rotary and other devices use LibTorch's scaled dot product.
/// </summary>
internal sealed unsafe class AttentionHeads
{
    private readonly long _heads, _kvHeads, _group, _headDim;
    private readonly Rotary? _rotary;
    private readonly CpuKernel? _kernel;
    private readonly float _scale;

    public AttentionHeads(TransformerConfig config, Rotary? rotary, CpuKernel? kernel = null)
    {
        _heads = config.Heads;
        _kvHeads = config.EffectiveKvHeads;
        _group = _heads / _kvHeads;
        _headDim = config.HeadDim;
        _rotary = rotary;
        _kernel = kernel;
        _scale = (float)(1 / Math.Sqrt(_headDim));
    }

    public long QueryWidth => _heads * _headDim;
    public long KvWidth => _kvHeads * _headDim;

    /// <summary>[B, S, G·d_k] → [B, G, S, d_k].</summary>
    public Tensor SplitKv(Tensor x) => x.shape[1] == 1
        ? x.reshape(x.shape[0], _kvHeads, 1, _headDim) // one position: the transpose would not move anything
        : x.reshape(x.shape[0], x.shape[1], _kvHeads, _headDim).transpose(1, 2);

    /// <summary>
    /// Self-attention on the projection <paramref name="qkv"/> [B,T,W] whose first columns are q (H·d_k), k and v
    /// (G·d_k each), at target positions offset..offset+T-1. With a cache the new keys/values are appended to it and
    /// attention covers every cached position. Returns the merged heads [B,T,H·d_k] (before the output projection).
    /// </summary>
    public Tensor SelfAttend(Tensor qkv, Tensor? mask, long offset, KvCache? cache, int layer)
    {
        if (cache is not null && _rotary is null && qkv.shape[1] == 1 && OwnStep(qkv) && KernelMask(mask, qkv.shape[0], cache.Length + 1))
            return CachedStep(qkv, mask, cache, layer);
        var rest = qkv.shape[^1] - QueryWidth - 2 * KvWidth;
        var parts = qkv.split(rest == 0 ? new[] { QueryWidth, KvWidth, KvWidth } : new[] { QueryWidth, KvWidth, KvWidth, rest }, -1);
        return SelfAttend(parts[0], parts[1], parts[2], mask, offset, cache, layer);
    }

    /// <summary>Whether the kernel runs this step: our CPU kernels and a contiguous input.</summary>
    private bool OwnStep(Tensor x) => _kernel is not null && x.is_contiguous();

    /// <summary>Whether the kernels can read <paramref name="mask"/> for <paramref name="batch"/> rows of one query over
    /// <paramref name="positions"/> keys: none, or a contiguous boolean <c>[B|1, 1, 1, positions]</c> one (any other
    /// shape keeps LibTorch's path, which broadcasts or reports it).</summary>
    internal static bool KernelMask(Tensor? mask, long batch, long positions)
    {
        if (mask is null) return true;
        if (mask.dtype != ScalarType.Bool) return false;
        var shape = mask.shape; // one native call and one array (each Tensor.shape read makes both)
        return shape.Length == 4 && (shape[0] == 1 || shape[0] == batch) && shape[1] == 1 && shape[2] == 1 && shape[3] == positions
               && mask.is_contiguous();
    }

    /// <summary>A boolean mask's bytes and row stride (0 when one row serves all), or null.</summary>
    internal static (IntPtr Bytes, long Row) MaskPointer(Tensor? mask) =>
        mask is null ? (IntPtr.Zero, 0) : (PackedLinear.Pointer(mask), mask.shape[0] == 1 ? 0 : mask.shape[3]);

    /// <summary>Whether the kernel can run steps on raw memory (see <see cref="Step"/>): our CPU kernels, no rotary.</summary>
    internal bool RawSteps => _kernel is not null && _rotary is null;

    private Tensor CachedStep(Tensor qkv, Tensor? mask, KvCache cache, int layer)
    {
        var batch = qkv.shape[0];
        var output = empty(new[] { batch, 1, QueryWidth }, ScalarType.Float32);
        var (bytes, row) = MaskPointer(mask);
        Step((float*)PackedLinear.Pointer(qkv), qkv.shape[^1], cache, layer, (byte*)bytes, row, batch, (float*)PackedLinear.Pointer(output));
        return output;
    }

    /// <summary>One query per row on raw memory: rows of <paramref name="width"/> floats of <paramref name="qkv"/> start
    /// with q, k and v; this step's keys and values are copied into the cache's stores at position
    /// <see cref="KvCache.Length"/>, then the kernel attends over every cached position into
    /// <paramref name="output"/> <c>[B, H·d_k]</c>.</summary>
    internal void Step(float* qkv, long width, KvCache cache, int layer, byte* mask, long maskRow, long batch, float* output)
    {
        var (keyStore, valueStore, shift, rowShift) = cache.Stores(layer);
        long d = _headDim, capacity = keyStore.shape[2];
        long head = capacity * d, row = _kvHeads * head;
        float* keys = (float*)PackedLinear.Pointer(keyStore) + rowShift * row + shift * d;
        float* values = (float*)PackedLinear.Pointer(valueStore) + rowShift * row + shift * d;
        var at = cache.Length * d;
        var bytes = d * sizeof(float);
        for (var b = 0; b < batch; b++)
        {
            for (var g = 0; g < _kvHeads; g++)
            {
                var source = qkv + b * width + QueryWidth + g * d;
                Buffer.MemoryCopy(source, keys + b * row + g * head + at, bytes, bytes);
                Buffer.MemoryCopy(source + KvWidth, values + b * row + g * head + at, bytes, bytes);
            }
        }
        Run(qkv, width, keys, values, row, head, mask, maskRow, batch, cache.Length + 1, output);
    }

    /// <summary>One query per row of <paramref name="q"/> (rows of <see cref="QueryWidth"/>) over contiguous keys and
    /// values <c>[B, G, S, d_k]</c>, on raw memory, into <paramref name="output"/> <c>[B, H·d_k]</c>.</summary>
    internal void Attend(float* q, Tensor keys, Tensor values, byte* mask, long maskRow, long batch, float* output)
    {
        var positions = keys.shape[2];
        Run(q, QueryWidth, (float*)PackedLinear.Pointer(keys), (float*)PackedLinear.Pointer(values),
            _kvHeads * positions * _headDim, positions * _headDim, mask, maskRow, batch, positions, output);
    }

    private void Run(float* queries, long queryRow, float* keys, float* values, long kvRow, long kvHead, byte* mask, long maskRow,
        long batch, long positions, float* output)
    {
        var a = new OneQueryAttention
        {
            Queries = queries, QueryRow = queryRow, Keys = keys, Values = values, KvRow = kvRow, KvHead = kvHead,
            Mask = mask, MaskRow = maskRow, Output = output,
            Batch = (int)batch, Heads = (int)_heads, KvHeads = (int)_kvHeads, HeadDim = (int)_headDim, Positions = (int)positions,
            Scale = _scale,
        };
        StepKernels.Attention(_kernel!.Value, a);
    }

    /// <summary>Self-attention on projected q [B,T,H·d_k], k and v [B,T,G·d_k] (LibTorch's path).</summary>
    private Tensor SelfAttend(Tensor q, Tensor k, Tensor v, Tensor? mask, long offset, KvCache? cache, int layer)
    {
        var count = q.shape[1];
        var keys = SplitKv(k);
        var values = SplitKv(v);
        var perRow = cache?.RaggedStep?.Positions; // rows that joined a running batch: each at its own position
        if (_rotary is not null) keys = perRow is null ? _rotary.Apply(keys, offset, count) : _rotary.Apply(keys, perRow);
        if (cache is not null) (keys, values) = cache.Append(layer, keys, values);
        return Attend(q, keys, values, mask, _rotary is null ? -1 : offset, perRow);
    }

    /// <summary>Attention of q [B,T,H·d_k] over prepared keys/values [B,G,S,d_k]; mask [B|1, 1, T|1, S] (true = attend).
    /// <paramref name="rotaryOffset"/> ≥ 0 rotates the queries from that position (<paramref name="rotaryPositions"/>
    /// [B,1]: one query per row, each at its own position).</summary>
    public Tensor Attend(Tensor q, Tensor keys, Tensor values, Tensor? mask, long rotaryOffset = -1, Tensor? rotaryPositions = null)
    {
        long batch = q.shape[0], count = q.shape[1];
        if (count == 1 && rotaryOffset < 0 && OwnStep(q) && keys.is_contiguous() && values.is_contiguous()
            && keys.shape[0] == batch && KernelMask(mask, batch, keys.shape[2]))
        {
            var attended = empty(new[] { batch, 1, QueryWidth }, ScalarType.Float32);
            var (bytes, row) = MaskPointer(mask);
            Attend((float*)PackedLinear.Pointer(q), keys, values, (byte*)bytes, row, batch, (float*)PackedLinear.Pointer(attended));
            return attended;
        }
        Tensor queries;
        if (count == 1)
        {
            // One new token: [B,1,H·d_k] is already [B,G,R,d_k] in memory.
            queries = q.reshape(batch, _kvHeads, _group, _headDim);
            if (rotaryOffset >= 0) queries = rotaryPositions is null ? _rotary!.Apply(queries, rotaryOffset, 1) : _rotary!.Apply(queries, rotaryPositions);
        }
        else
        {
            queries = q.reshape(batch, count, _kvHeads, _group, _headDim).permute(0, 2, 3, 1, 4);
            if (rotaryOffset >= 0) queries = _rotary!.Apply(queries, rotaryOffset, count);
            queries = queries.reshape(batch, _kvHeads, _group * count, _headDim);
            if (mask is not null && _group > 1 && mask.shape[2] > 1)
                mask = mask.unsqueeze(2).expand(mask.shape[0], 1, _group, count, mask.shape[3])
                    .reshape(mask.shape[0], 1, _group * count, mask.shape[3]);
        }
        var output = F.scaled_dot_product_attention(queries, keys, values, mask); // [B,G,R·T,d_k]
        if (count == 1) return output.reshape(batch, 1, QueryWidth);
        return output.view(batch, _kvHeads, _group, count, _headDim).permute(0, 3, 1, 2, 4).reshape(batch, count, QueryWidth);
    }
}
