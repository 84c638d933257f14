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
    private readonly Tensor[] _selfKeys; // views [rows, kv_heads, Capacity, head_dim] into the stores
    private readonly Tensor[] _selfValues;
    // The self-attention allocations: [row capacity, kv_heads, positions, head_dim]. Rows and positions to spare let
    // calls join and rows leave without reallocating; they grow geometrically when a join needs more.
    private readonly Tensor[] _keyStores, _valueStores;
    private long _shift; // store position of cache position 0 (positions before it were compacted away)
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
        _keyStores = new Tensor[layers];
        _valueStores = new Tensor[layers];
        _crossKeys = new Tensor[layers];
        _crossValues = new Tensor[layers];
        for (var i = 0; i < layers; i++)
        {
            _keyStores[i] = empty(new[] { batch, kvHeads, capacity, headDim }, dtype, device).DetachFromDisposeScope();
            _valueStores[i] = empty(new[] { batch, kvHeads, capacity, headDim }, dtype, device).DetachFromDisposeScope();
        }
        _sourceMask = sourceMask.DetachFromDisposeScope();
        View(batch);
    }

    /// <summary>Times a join had to reallocate the self-attention stores (tests).</summary>
    internal int Growths { get; private set; }

    /// <summary>Rows the stores hold (used or to spare).</summary>
    private long StoreRows => _keyStores[0].shape[0];

    /// <summary>Points the self-attention views at the first <paramref name="rows"/> rows of the stores, positions
    /// from <see cref="_shift"/> for <see cref="Capacity"/>.</summary>
    private void View(long rows)
    {
        for (var i = 0; i < _keyStores.Length; i++)
        {
            _selfKeys[i]?.Dispose();
            _selfValues[i]?.Dispose();
            using (var k = _keyStores[i].narrow(0, 0, rows)) _selfKeys[i] = k.narrow(2, _shift, Capacity).DetachFromDisposeScope();
            using (var v = _valueStores[i].narrow(0, 0, rows)) _selfValues[i] = v.narrow(2, _shift, Capacity).DetachFromDisposeScope();
        }
    }

    /// <summary>Keeps the filled positions of rows <paramref name="index"/> (int64, repeats allowed) as rows 0..n−1,
    /// in place when the stores hold n rows, else in new stores of n rows.</summary>
    private void SelectSelfRows(Tensor index)
    {
        var n = index.shape[0];
        var fits = n <= StoreRows;
        for (var i = 0; i < _keyStores.Length; i++)
        {
            foreach (var (views, stores) in new[] { (_selfKeys, _keyStores), (_selfValues, _valueStores) })
            {
                using var used = views[i].narrow(2, 0, Length);
                using var picked = used.index_select(0, index);
                if (!fits)
                {
                    var shape = stores[i].shape.ToArray();
                    shape[0] = n;
                    shape[2] = Capacity;
                    var store = empty(shape, stores[i].dtype, stores[i].device).DetachFromDisposeScope();
                    stores[i].Dispose();
                    stores[i] = store;
                }
                var offset = fits ? _shift : 0;
                using var target = stores[i].narrow(0, 0, n);
                using var filled = target.narrow(2, offset, Length);
                filled.copy_(picked);
            }
        }
        if (!fits) _shift = 0;
        // Same rows in place (beams following their parents, every beam step): the views already cover them.
        if (fits && n == _selfKeys[0].shape[0]) return;
        View(n);
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
    public long Bytes => _keyStores.Concat(_valueStores).Concat(_crossKeys).Concat(_crossValues)
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

    /// <summary>The self-attention stores of <paramref name="layer"/> (<c>[row capacity, kv_heads, positions,
    /// head_dim]</c>, contiguous; row r is the cache's row r) and the store position of cache position 0: for a kernel
    /// that writes one step's keys and values at position <see cref="Length"/> itself (see <see cref="Append"/>).</summary>
    internal (Tensor Keys, Tensor Values, long Shift) Stores(int layer)
    {
        if (Length + 1 > Capacity)
            throw new InvalidOperationException($"The KV cache holds {Capacity} positions; {Length + 1} were asked for.");
        return (_keyStores[layer], _valueStores[layer], _shift);
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
        var needed = Length + joining.Max(j => j.Capacity);
        if (rows + added <= StoreRows && needed <= Capacity)
        {
            // Spare rows and positions: the joining rows take them. Positions before their start are read (masked):
            // keep them finite. Later positions are written before they are read.
            foreach (var store in _keyStores.Concat(_valueStores))
                if (Length > 0) store.narrow(0, rows, added).narrow(2, _shift, Length).zero_();
        }
        else
        {
            // Grow geometrically (half again the rows, and positions to spare for about as many steps as the
            // joining calls need), so that the next joins find room.
            var rowCapacity = Math.Max(rows + added, StoreRows + StoreRows / 2);
            var capacity = Math.Max(Capacity, needed + joining.Max(j => j.Capacity));
            for (var i = 0; i < _keyStores.Length; i++)
            {
                foreach (var (views, stores) in new[] { (_selfKeys, _keyStores), (_selfValues, _valueStores) })
                {
                    var shape = stores[i].shape.ToArray();
                    shape[0] = rowCapacity;
                    shape[2] = capacity;
                    var store = empty(shape, stores[i].dtype, stores[i].device).DetachFromDisposeScope();
                    if (Length > 0)
                    {
                        store.narrow(0, 0, rows).narrow(2, 0, Length).copy_(views[i].narrow(2, 0, Length));
                        store.narrow(0, rows, rowCapacity - rows).narrow(2, 0, Length).zero_();
                    }
                    stores[i].Dispose();
                    stores[i] = store;
                }
            }
            _shift = 0;
            Capacity = capacity;
            Growths++;
        }
        var width = Math.Max(_sourceMask.shape[3], joining.Max(j => j._sourceMask.shape[3]));
        // The cross-attention tensors and source masks of all rows, each padded to the longest source, in one tensor.
        Tensor Join(Tensor mine, Func<KvCache, Tensor> theirs, long dim)
        {
            var shape = mine.shape.ToArray();
            shape[0] = rows + added;
            shape[dim] = width;
            // Written once: each part copied, only its padding zeroed (zero keys/values, false mask).
            var joined = empty(shape, mine.dtype, mine.device);
            void Put(Tensor t, long at)
            {
                var slot = joined.narrow(0, at, t.shape[0]);
                slot.narrow(dim, 0, t.shape[dim]).copy_(t);
                if (t.shape[dim] < width) slot.narrow(dim, t.shape[dim], width - t.shape[dim]).zero_();
            }
            Put(mine, 0);
            var at = rows;
            foreach (var j in joining)
            {
                var t = theirs(j);
                Put(t, at);
                at += t.shape[0];
            }
            return joined.DetachFromDisposeScope();
        }
        for (var i = 0; i < _selfKeys.Length; i++)
        {
            if (_crossKeys[i] is null) continue;
            var layer = i;
            Replace(ref _crossKeys[i], Join(_crossKeys[i], j => j._crossKeys[layer], 2));
            Replace(ref _crossValues[i], Join(_crossValues[i], j => j._crossValues[layer], 2));
        }
        Replace(ref _sourceMask, Join(_sourceMask, j => j._sourceMask, 3));
        _starts = (_starts ?? new long[rows]).Concat(Enumerable.Repeat(Length, (int)added)).ToArray();
        if (_starts.All(v => v == 0)) _starts = null;
        View(rows + added);
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
            _shift += shift;
            Length -= shift;
            Capacity -= shift;
            View(BatchSize);
            for (var r = 0; r < _starts.Length; r++) _starts[r] -= shift;
        }
        if (_starts.All(v => v == 0)) _starts = null;
    }

    /// <summary>
    /// Keeps the rows named by <paramref name="rows"/> (int64 indices, repeats allowed), in that order: how beam search
    /// follows its parents and how a batch drops finished sequences.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="rows"/> is not a 1-D int64 tensor of row indices inside the
    /// cache's batch.</exception>
    /// <exception cref="ObjectDisposedException">The cache was disposed.</exception>
    public void Reorder(Tensor rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        ThrowIfDisposed();
        CheckRows(rows);
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
        // Self-attention: only the filled positions move, in place while the stores hold the rows.
        SelectSelfRows(index);
        if (index.shape[0] == BatchSize)
        {
            // Same row count (beams following parents): the rest in place too.
            foreach (var t in _crossKeys.Concat(_crossValues).Where(t => t is not null).Append(_sourceMask))
            {
                using var picked = t.index_select(0, index);
                t.copy_(picked);
            }
            Compact();
            return;
        }
        Select(_crossKeys, index);
        Select(_crossValues, index);
        var oldMask = _sourceMask;
        _sourceMask = oldMask.index_select(0, index).DetachFromDisposeScope();
        oldMask.Dispose();
        Compact();
    }

    internal void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>Row indices must be a 1-D int64 tensor inside <c>[0, BatchSize)</c> (read in place on the CPU, where
    /// the searches build them; one reduction elsewhere), so no index reaches a native error.</summary>
    private void CheckRows(Tensor rows)
    {
        if (rows.dim() != 1 || rows.dtype != ScalarType.Int64)
            throw new ArgumentException($"Rows must be a 1-D int64 tensor, got {rows.dtype} [{string.Join(", ", rows.shape)}].", nameof(rows));
        if (rows.NumberOfElements == 0) return;
        var (low, high) = TransformerModel.Range(rows);
        if (low < 0 || high >= BatchSize)
            throw new ArgumentException($"Rows must lie in [0, {BatchSize}); got {(low < 0 ? low : high)}.", nameof(rows));
    }

    /// <summary>Frees every cached tensor.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var t in _selfKeys.Concat(_selfValues).Concat(_keyStores).Concat(_valueStores).Concat(_crossKeys).Concat(_crossValues))
            t?.Dispose();
        _sourceMask.Dispose();
        ReleaseStep();
    }
}
