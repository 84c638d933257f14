using TorchSharp;
using TransformerInference.Modeling;
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
    private long[]? _starts; // per row, the shared position where its first token sits (rows that joined later); null: all 0
    private Tensor? _stepPositions, _stepMask; // this step's per-row positions and self-attention key mask (ragged rows)
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
    public long Capacity { get; private set; }

    /// <summary>Whether rows started at different steps (some joined a running batch): each row then has its own
    /// positions and a self-attention mask that hides the positions before its start.</summary>
    internal bool Ragged => _starts is not null;

    /// <summary>Positions the longest row holds (what the model's position limit applies to).</summary>
    internal long RowLength => Length - (_starts?.Min() ?? 0);

    /// <summary>Ragged rows only: each row's position for this step's token <c>[B, 1]</c> (int64) and the
    /// self-attention key mask <c>[B, 1, 1, Length + 1]</c> (true from the row's start). Built by
    /// <see cref="BeginRaggedStep"/>, freed by <see cref="Advance"/>.</summary>
    internal (Tensor Positions, Tensor Mask)? RaggedStep => _stepPositions is null ? null : (_stepPositions, _stepMask!);

    /// <summary>Prepares <see cref="RaggedStep"/> for one new token per row.</summary>
    internal void BeginRaggedStep()
    {
        if (_starts is null) return;
        ReleaseStep();
        using var scope = NewDisposeScope();
        var device = _sourceMask.device;
        var starts = tensor(_starts, device: device);
        using var length = Length.ToScalar(); // Scalars held until the native calls return (see Held)
        using var width = (Length + 1).ToScalar();
        _stepPositions = starts.neg().add_(length, Held.One).unsqueeze(1).DetachFromDisposeScope();
        _stepMask = arange(width, ScalarType.Int64, device).unsqueeze(0).ge(starts.unsqueeze(1))
            .unsqueeze(1).unsqueeze(1).DetachFromDisposeScope();
    }

    private void ReleaseStep()
    {
        _stepPositions?.Dispose();
        _stepMask?.Dispose();
        _stepPositions = _stepMask = null;
    }

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
    internal void Advance(long count)
    {
        Length += count;
        ReleaseStep();
    }

    /// <summary>
    /// Takes the rows of <paramref name="joining"/> (caches fresh from <see cref="ISeq2SeqModel.Start"/>, nothing
    /// decoded yet), in order, after this cache's rows: they start at the current position, their cross-attention
    /// keys, values and source masks are padded to the longest source (masked), and the buffers grow if a length
    /// limit needs it. Every buffer is allocated once, whatever the number of caches joining. The joining caches are
    /// disposed. How calls join a running batch at a step boundary.
    /// </summary>
    internal void Merge(IReadOnlyList<KvCache> joining)
    {
        foreach (var j in joining)
        {
            if (j.Length != 0) throw new ArgumentException("Only a cache with nothing decoded yet can join.", nameof(joining));
            if (j._selfKeys.Length != _selfKeys.Length) throw new ArgumentException("The caches belong to different models.", nameof(joining));
        }
        if (joining.Count == 0) return;
        using var scope = NewDisposeScope();
        var rows = BatchSize;
        var added = joining.Sum(j => j.BatchSize);
        var capacity = Math.Max(Capacity, Length + joining.Max(j => j.Capacity));
        Tensor JoinSelf(Tensor mine)
        {
            var shape = mine.shape.ToArray();
            shape[0] = rows + added;
            shape[2] = capacity;
            var joined = zeros(shape, mine.dtype, mine.device); // positions before a row's start are read (masked): keep them finite
            joined.narrow(0, 0, rows).narrow(2, 0, Length).copy_(mine.narrow(2, 0, Length));
            return joined.DetachFromDisposeScope();
        }
        var width = Math.Max(_sourceMask.shape[3], joining.Max(j => j._sourceMask.shape[3]));
        // The cross-attention tensors and source masks of all rows, each padded to the longest source, in one tensor.
        Tensor Join(Tensor mine, Func<KvCache, Tensor> theirs, long dim)
        {
            var shape = mine.shape.ToArray();
            shape[0] = rows + added;
            shape[dim] = width;
            var joined = zeros(shape, mine.dtype, mine.device);
            joined.narrow(0, 0, rows).narrow(dim, 0, mine.shape[dim]).copy_(mine);
            var at = rows;
            foreach (var j in joining)
            {
                var t = theirs(j);
                joined.narrow(0, at, t.shape[0]).narrow(dim, 0, t.shape[dim]).copy_(t);
                at += t.shape[0];
            }
            return joined.DetachFromDisposeScope();
        }
        for (var i = 0; i < _selfKeys.Length; i++)
        {
            Replace(ref _selfKeys[i], JoinSelf(_selfKeys[i]));
            Replace(ref _selfValues[i], JoinSelf(_selfValues[i]));
            if (_crossKeys[i] is null) continue;
            var layer = i;
            Replace(ref _crossKeys[i], Join(_crossKeys[i], j => j._crossKeys[layer], 2));
            Replace(ref _crossValues[i], Join(_crossValues[i], j => j._crossValues[layer], 2));
        }
        Replace(ref _sourceMask, Join(_sourceMask, j => j._sourceMask, 3));
        _starts = (_starts ?? new long[rows]).Concat(Enumerable.Repeat(Length, (int)added)).ToArray();
        if (_starts.All(v => v == 0)) _starts = null;
        Capacity = capacity;
        foreach (var j in joining) j.Dispose();
    }

    private static void Replace(ref Tensor slot, Tensor value)
    {
        var old = slot;
        slot = value;
        old.Dispose();
    }

    /// <summary>Drops the positions no row reads any more (before the earliest start of the remaining rows).</summary>
    private void Compact()
    {
        if (_starts is null) return;
        var shift = _starts.Min();
        if (shift > 0)
        {
            for (var i = 0; i < _selfKeys.Length; i++)
            {
                Replace(ref _selfKeys[i], _selfKeys[i].narrow(2, shift, Capacity - shift).DetachFromDisposeScope());
                Replace(ref _selfValues[i], _selfValues[i].narrow(2, shift, Capacity - shift).DetachFromDisposeScope());
            }
            Length -= shift;
            Capacity -= shift;
            for (var r = 0; r < _starts.Length; r++) _starts[r] -= shift;
        }
        if (_starts.All(v => v == 0)) _starts = null;
    }

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
        if (_starts is not null)
        {
            using var host = rows.cpu();
            var starts = _starts;
            _starts = host.data<long>().ToArray().Select(r => starts[r]).ToArray();
        }
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
            Compact();
            return;
        }
        Select(_selfKeys, index);
        Select(_selfValues, index);
        Select(_crossKeys, index);
        Select(_crossValues, index);
        var oldMask = _sourceMask;
        _sourceMask = oldMask.index_select(0, index).DetachFromDisposeScope();
        oldMask.Dispose();
        Compact();
    }

    /// <summary>Frees every cached tensor.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var t in _selfKeys.Concat(_selfValues).Concat(_crossKeys).Concat(_crossValues))
            t?.Dispose();
        _sourceMask.Dispose();
        ReleaseStep();
    }
}
