using static TorchSharp.torch;

namespace TransformerInference.Decoding;

/// <summary>
/// Per-sequence decoder state for incremental decoding: for every decoder layer the self-attention keys and values
/// (preallocated to the length limit and filled one step at a time), the cross-attention keys and values computed
/// once from the encoder output, and the source padding mask. Layout <c>[batch, kv_heads, positions, head_dim]</c>.
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly Tensor[] _selfKeys;
    private readonly Tensor[] _selfValues;
    private readonly Tensor[] _crossKeys;
    private readonly Tensor[] _crossValues;
    private Tensor _sourceMask;
    private bool _disposed;

    internal KvCache(int layers, long batch, long kvHeads, long capacity, long headDim, Tensor sourceMask,
        ScalarType dtype, Device device)
    {
        Capacity = capacity;
        _selfKeys = new Tensor[layers];
        _selfValues = new Tensor[layers];
        _crossKeys = new Tensor[layers];
        _crossValues = new Tensor[layers];
        for (var i = 0; i < layers; i++)
        {
            _selfKeys[i] = empty(new[] { batch, kvHeads, capacity, headDim }, dtype, device).DetachFromDisposeScope();
            _selfValues[i] = empty(new[] { batch, kvHeads, capacity, headDim }, dtype, device).DetachFromDisposeScope();
        }
        _sourceMask = sourceMask.DetachFromDisposeScope();
    }

    /// <summary>Number of target positions already cached.</summary>
    public long Length { get; private set; }

    /// <summary>Most target positions the cache can hold.</summary>
    public long Capacity { get; }

    /// <summary>Rows (sequences or beams) currently in the cache.</summary>
    public long BatchSize => _sourceMask.shape[0];

    /// <summary>Source key mask <c>[batch, 1, 1, source_len]</c>, true where a source position may be attended.</summary>
    internal Tensor SourceMask => _sourceMask;

    /// <summary>Bytes held by the cache tensors (self-attention buffers at full capacity plus cross-attention).</summary>
    public long Bytes => _selfKeys.Concat(_selfValues).Concat(_crossKeys).Concat(_crossValues)
        .Where(t => t is not null).Sum(t => t.NumberOfElements * t.ElementSize);

    /// <summary>Shapes of one layer's cached tensors as used so far: self keys, self values, cross keys, cross values.</summary>
    public IReadOnlyList<long[]> LayerShapes(int layer)
    {
        var self = _selfKeys[layer].shape.ToArray();
        self[2] = Length;
        return new[] { self, (long[])self.Clone(), _crossKeys[layer].shape, _crossValues[layer].shape };
    }

    internal void SetCross(int layer, Tensor keys, Tensor values)
    {
        _crossKeys[layer] = keys.DetachFromDisposeScope();
        _crossValues[layer] = values.DetachFromDisposeScope();
    }

    internal (Tensor Keys, Tensor Values) Cross(int layer) => (_crossKeys[layer], _crossValues[layer]);

    /// <summary>Writes this step's keys and values <c>[batch, kv_heads, T, head_dim]</c> after the cached ones and
    /// returns views over everything cached so far, the new positions included.</summary>
    internal (Tensor Keys, Tensor Values) Append(int layer, Tensor keys, Tensor values)
    {
        var count = keys.shape[2];
        if (Length + count > Capacity)
            throw new InvalidOperationException($"The KV cache holds {Capacity} positions; {Length + count} were asked for.");
        _selfKeys[layer].narrow(2, Length, count).copy_(keys);
        _selfValues[layer].narrow(2, Length, count).copy_(values);
        return (_selfKeys[layer].narrow(2, 0, Length + count), _selfValues[layer].narrow(2, 0, Length + count));
    }

    /// <summary>Marks <paramref name="count"/> more positions as cached (called once per step, after every layer).</summary>
    internal void Advance(long count) => Length += count;

    /// <summary>
    /// Keeps the rows named by <paramref name="rows"/> (int64 indices, repeats allowed), in that order: how beam search
    /// follows its parents and how a batch drops finished sequences.
    /// </summary>
    public void Reorder(Tensor rows)
    {
        static void Select(Tensor[] tensors, Tensor index)
        {
            for (var i = 0; i < tensors.Length; i++)
            {
                if (tensors[i] is null) continue;
                var old = tensors[i];
                tensors[i] = old.index_select(0, index).DetachFromDisposeScope();
                old.Dispose();
            }
        }
        using var index = rows.device == _sourceMask.device ? rows.alias() : rows.to(_sourceMask.device);
        if (index.shape[0] == BatchSize)
        {
            // Same row count (beams following parents): permute only the filled positions, in place, instead of
            // copying the buffers at full capacity.
            foreach (var buffer in _selfKeys.Concat(_selfValues))
            {
                using var used = buffer.narrow(2, 0, Length);
                using var picked = used.index_select(0, index);
                used.copy_(picked);
            }
            foreach (var t in _crossKeys.Concat(_crossValues).Where(t => t is not null).Append(_sourceMask))
            {
                using var picked = t.index_select(0, index);
                t.copy_(picked);
            }
            return;
        }
        Select(_selfKeys, index);
        Select(_selfValues, index);
        Select(_crossKeys, index);
        Select(_crossValues, index);
        var oldMask = _sourceMask;
        _sourceMask = oldMask.index_select(0, index).DetachFromDisposeScope();
        oldMask.Dispose();
    }

    /// <summary>Frees every cached tensor.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var t in _selfKeys.Concat(_selfValues).Concat(_crossKeys).Concat(_crossValues))
            t?.Dispose();
        _sourceMask.Dispose();
    }
}
