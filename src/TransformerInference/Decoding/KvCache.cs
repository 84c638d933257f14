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
    // Store row of cache row 0, in every store (self and cross): rows that leave from the front (the oldest calls,
    // usually the first to finish) are dropped by moving this instead of every row behind them.
    private long _rowShift;
    private readonly Tensor[] _crossKeys; // views [rows, kv_heads, source width, head_dim] into the cross stores
    private readonly Tensor[] _crossValues;
    private Tensor _sourceMask; // view [rows, 1, 1, source width] into the mask store
    // The cross-attention and source-mask allocations: [row capacity, ...]. Like the self-attention stores, rows to
    // spare let calls join and rows leave in place instead of reallocating (and faulting in) every row each time.
    private readonly Tensor[] _crossKeyStores, _crossValueStores;
    private Tensor _maskStore;
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
        _crossKeyStores = new Tensor[layers];
        _crossValueStores = new Tensor[layers];
        for (var i = 0; i < layers; i++)
        {
            _keyStores[i] = empty(new[] { batch, kvHeads, capacity, headDim }, dtype, device).DetachFromDisposeScope();
            _valueStores[i] = empty(new[] { batch, kvHeads, capacity, headDim }, dtype, device).DetachFromDisposeScope();
        }
        // Contiguous stores (a broadcast mask is copied once here), so rows can always be written in place.
        _maskStore = sourceMask.contiguous().DetachFromDisposeScope();
        _sourceMask = _maskStore.alias().DetachFromDisposeScope();
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
            using (var k = _keyStores[i].narrow(0, _rowShift, rows)) _selfKeys[i] = k.narrow(2, _shift, Capacity).DetachFromDisposeScope();
            using (var v = _valueStores[i].narrow(0, _rowShift, rows)) _selfValues[i] = v.narrow(2, _shift, Capacity).DetachFromDisposeScope();
        }
    }

    /// <summary>Keeps the filled positions of rows <paramref name="index"/> (int64, repeats allowed) as rows 0..n−1,
    /// in place when the stores hold n rows, else in new stores of n rows.</summary>
    private void SelectSelfRows(Tensor index, long[] host, int same, bool down)
    {
        var n = index.shape[0];
        var fits = n <= StoreRows;
        if (fits && down)
        {
            // Rows leave, the rest keep their order: each moves down in place (none when only the last rows left).
            foreach (var store in _keyStores.Concat(_valueStores))
                using (var shifted = store.narrow(0, _rowShift, StoreRows - _rowShift))
                using (var filled = shifted.narrow(2, _shift, Length))
                    MoveRowsDown(filled, host, same);
            if (n != _selfKeys[0].shape[0]) View(n);
            return;
        }
        if (!fits) same = 0;
        for (var i = 0; i < _keyStores.Length; i++)
        {
            foreach (var (views, stores) in new[] { (_selfKeys, _keyStores), (_selfValues, _valueStores) })
            {
                using var used = views[i].narrow(2, 0, Length);
                using var moved = index.narrow(0, same, n - same);
                using var picked = used.index_select(0, moved);
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
                using var target = stores[i].narrow(0, same, n - same);
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
    public long Bytes => _keyStores.Concat(_valueStores).Concat(_crossKeyStores).Concat(_crossValueStores)
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
        _crossKeyStores[layer] = keys.contiguous().DetachFromDisposeScope();
        _crossValueStores[layer] = values.contiguous().DetachFromDisposeScope();
        _crossKeys[layer] = _crossKeyStores[layer].alias().DetachFromDisposeScope();
        _crossValues[layer] = _crossValueStores[layer].alias().DetachFromDisposeScope();
    }

    /// <summary>Times a join had to reallocate the cross-attention and source-mask stores (tests).</summary>
    internal int CrossGrowths { get; private set; }

    /// <summary>Rows the cross stores hold (used or to spare).</summary>
    private long CrossStoreRows => _maskStore.shape[0];

    /// <summary>Points the cross-attention and source-mask views at the first <paramref name="rows"/> rows of their
    /// stores (every source position of the stores).</summary>
    private void CrossView(long rows)
    {
        for (var i = 0; i < _crossKeyStores.Length; i++)
        {
            if (_crossKeyStores[i] is null) continue;
            Replace(ref _crossKeys[i], _crossKeyStores[i].narrow(0, _rowShift, rows).DetachFromDisposeScope());
            Replace(ref _crossValues[i], _crossValueStores[i].narrow(0, _rowShift, rows).DetachFromDisposeScope());
        }
        Replace(ref _sourceMask, _maskStore.narrow(0, _rowShift, rows).DetachFromDisposeScope());
    }

    /// <summary>Every cross store with its view, and the source-mask store with its view: (store, view, source dim).</summary>
    private IEnumerable<(Tensor[] Stores, Tensor[] Views, int Index, long Dim)> CrossSlots()
    {
        for (var i = 0; i < _crossKeyStores.Length; i++)
        {
            if (_crossKeyStores[i] is null) continue;
            yield return (_crossKeyStores, _crossKeys, i, 2);
            yield return (_crossValueStores, _crossValues, i, 2);
        }
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
    /// head_dim]</c>, contiguous; cache row r is store row <c>RowShift + r</c>) and the store position of cache position 0: for a kernel
    /// that writes one step's keys and values at position <see cref="Length"/> itself (see <see cref="Append"/>).</summary>
    internal (Tensor Keys, Tensor Values, long Shift, long RowShift) Stores(int layer)
    {
        if (Length + 1 > Capacity)
            throw new InvalidOperationException($"The KV cache holds {Capacity} positions; {Length + 1} were asked for.");
        return (_keyStores[layer], _valueStores[layer], _shift, _rowShift);
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
        // Rows dropped from the front left the cache rows at an offset in the stores: they go back to the front first
        // unless the joining rows fit behind them as they are.
        if (_rowShift > 0)
        {
            var fitsRows = rows + added <= Math.Min(StoreRows, CrossStoreRows) - _rowShift;
            var fitsWidth = joining.Max(j => j._sourceMask.shape[3]) <= _maskStore.shape[3];
            var fitsPositions = needed <= Capacity || (_shift > 0 && needed <= _keyStores[0].shape[2]);
            if (!(fitsRows && fitsWidth && fitsPositions)) Normalize(rows);
        }
        // Positions run out while the stores' front holds only positions compacted away: the filled positions slide
        // back to the front (a copy, no allocation) instead of the stores growing.
        if (rows + added <= StoreRows - _rowShift && needed > Capacity && _shift > 0 && needed <= _keyStores[0].shape[2]) Slide(rows);
        if (rows + added <= StoreRows - _rowShift && needed <= Capacity)
        {
            // Spare rows and positions: the joining rows take them. Positions before their start are read (masked):
            // keep them finite. Later positions are written before they are read.
            foreach (var store in _keyStores.Concat(_valueStores))
                if (Length > 0) store.narrow(0, _rowShift + rows, added).narrow(2, _shift, Length).zero_();
        }
        else
        {
            // Grow geometrically (half again the rows when rows are short, and positions to spare for about as many
            // steps as the joining calls need), so that the next joins find room.
            System.Diagnostics.Debug.Assert(_rowShift == 0, "Rows at an offset are moved to the front before the stores grow.");
            // Rows grow only when they are short: a join that lacks only positions (a long call keeps position 0 while
            // others come and go) would otherwise add half again the rows each time, and zero them.
            var rowCapacity = rows + added <= StoreRows ? StoreRows : Math.Max(rows + added, StoreRows + StoreRows / 2);
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
        JoinCross(rows, added, joining);
        _starts = (_starts ?? new long[rows]).Concat(Enumerable.Repeat(Length, (int)added)).ToArray();
        if (_starts.All(v => v == 0)) _starts = null;
        View(rows + added);
        foreach (var j in joining) j.Dispose();
    }

    /// <summary>Writes the cross-attention keys, values and source masks of <paramref name="joining"/> into the cross
    /// stores' rows from <paramref name="rows"/> on, padded to the stores' source width (zero keys and values, false
    /// mask); the stores grow first (rows by half again when rows are short, the width to the longest source when it
    /// is short) when they lack room.</summary>
    private void JoinCross(long rows, long added, IReadOnlyList<KvCache> joining)
    {
        var width = Math.Max(_maskStore.shape[3], joining.Max(j => j._sourceMask.shape[3]));
        if (rows + added > CrossStoreRows - _rowShift || width > _maskStore.shape[3])
        {
            System.Diagnostics.Debug.Assert(_rowShift == 0, "Rows at an offset are moved to the front before the stores grow.");
            // Rows grow only when they are short: a longer source alone widens the stores without adding rows (it used
            // to add half again each time, and calls joining with ever longer sources made the stores balloon).
            var rowCapacity = rows + added <= CrossStoreRows ? CrossStoreRows : Math.Max(rows + added, CrossStoreRows + CrossStoreRows / 2);
            foreach (var (stores, views, i, dim) in CrossSlots()) stores[i] = Grown(stores[i], views[i], rows, rowCapacity, width, dim);
            _maskStore = Grown(_maskStore, _sourceMask, rows, rowCapacity, width, 3);
            CrossGrowths++;
        }
        // Each joining row written once: its part copied, only its padding zeroed.
        static void Put(Tensor store, Tensor part, long at, long dim)
        {
            using var slot = store.narrow(0, at, part.shape[0]);
            using (var filled = slot.narrow(dim, 0, part.shape[dim])) filled.copy_(part);
            var width = store.shape[dim];
            if (part.shape[dim] < width)
                using (var pad = slot.narrow(dim, part.shape[dim], width - part.shape[dim])) pad.zero_();
        }
        var at = _rowShift + rows;
        foreach (var j in joining)
        {
            foreach (var (stores, _, i, dim) in CrossSlots()) Put(stores[i], stores == _crossKeyStores ? j._crossKeys[i] : j._crossValues[i], at, dim);
            Put(_maskStore, j._sourceMask, at, 3);
            at += j.BatchSize;
        }
        CrossView(rows + added);
    }

    /// <summary>A new contiguous store of <paramref name="rowCapacity"/> rows and <paramref name="width"/> source
    /// positions holding the first <paramref name="rows"/> rows of <paramref name="view"/> (padding zeroed); the old
    /// store is disposed.</summary>
    private static Tensor Grown(Tensor store, Tensor view, long rows, long rowCapacity, long width, long dim)
    {
        var shape = store.shape.ToArray();
        shape[0] = rowCapacity;
        shape[dim] = width;
        var grown = empty(shape, store.dtype, store.device).DetachFromDisposeScope();
        using (var used = grown.narrow(0, 0, rows))
        {
            var old = view.shape[dim];
            using (var filled = used.narrow(dim, 0, old)) filled.copy_(view.narrow(0, 0, rows));
            if (old < width)
                using (var pad = used.narrow(dim, old, width - old)) pad.zero_();
        }
        store.Dispose();
        return grown;
    }

    /// <summary>Moves the filled positions of the first <paramref name="rows"/> rows to the stores' front.</summary>
    private void Slide(long rows)
    {
        for (var i = 0; i < _keyStores.Length; i++)
        {
            foreach (var store in new[] { _keyStores[i], _valueStores[i] })
            {
                using var used = store.narrow(0, _rowShift, rows);
                MoveDown(used, 2, _shift, 0, Length);
            }
        }
        Capacity += _shift;
        _shift = 0;
        Slides++;
        View(rows);
    }

    /// <summary>Moves the first <paramref name="rows"/> cache rows back to the stores' first rows (filled positions of
    /// the self-attention stores, every position of the cross stores), in pieces that do not overlap.</summary>
    private void Normalize(long rows)
    {
        if (_rowShift == 0) return;
        void Move(Tensor t) => MoveDown(t, 0, _rowShift, 0, rows);
        foreach (var store in _keyStores.Concat(_valueStores))
            using (var filled = store.narrow(2, _shift, Length)) Move(filled);
        foreach (var (stores, _, i, _) in CrossSlots()) Move(stores[i]);
        Move(_maskStore);
        _rowShift = 0;
        View(rows);
        CrossView(rows);
    }

    /// <summary>Rows the self-attention stores hold, used or to spare (tests).</summary>
    internal long SelfRows => StoreRows;

    /// <summary>Rows the cross-attention stores hold, used or to spare (tests).</summary>
    internal long CrossRows => CrossStoreRows;

    /// <summary>Store row of cache row 0 (tests).</summary>
    internal long RowShift => _rowShift;

    /// <summary>Times the filled positions slid to the stores' front instead of the stores growing (tests).</summary>
    internal int Slides { get; private set; }

    /// <summary>Whether <paramref name="index"/> keeps rows in their order, dropping some: every kept row then moves
    /// down (or stays), and <see cref="MoveRowsDown"/> can move it in place.</summary>
    private static bool Increasing(long[] index)
    {
        for (var j = 1; j < index.Length; j++)
            if (index[j] <= index[j - 1]) return false;
        return true;
    }

    /// <summary>Rows <c>index[j]</c> of <paramref name="t"/> to rows <c>j</c> for <c>j ≥ same</c>, in place, for an
    /// increasing <paramref name="index"/>: each run of consecutive rows copied at once, in pieces no longer than the
    /// distance it moves (no piece overlaps its source, and no source is overwritten before it is read). No temporary:
    /// a gather would allocate (and fault in) a copy of every moving row.</summary>
    private static void MoveRowsDown(Tensor t, long[] index, int same)
    {
        for (var j = same; j < index.Length;)
        {
            var run = 1;
            while (j + run < index.Length && index[j + run] == index[j] + run) run++;
            MoveDown(t, 0, index[j], j, run);
            j += run;
        }
    }

    /// <summary>Copies <paramref name="count"/> entries of <paramref name="dim"/> from <paramref name="from"/> down to
    /// <paramref name="to"/> in place, in pieces no longer than the distance moved: no piece overlaps the one it is
    /// copied from, and no source is overwritten before it is read.</summary>
    private static void MoveDown(Tensor t, long dim, long from, long to, long count)
    {
        var distance = from - to;
        if (distance <= 0 || count <= 0) return;
        for (long at = 0; at < count; at += distance)
        {
            var piece = Math.Min(distance, count - at);
            using var target = t.narrow(dim, to + at, piece);
            using var source = t.narrow(dim, from + at, piece);
            target.copy_(source);
        }
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
        using var index = rows.device == _sourceMask.device ? rows.alias() : rows.to(_sourceMask.device);
        long[] host;
        using (var cpu = rows.cpu()) host = cpu.data<long>().ToArray();
        if (_starts is not null)
        {
            var starts = _starts;
            _starts = host.Select(r => starts[r]).ToArray();
        }
        // Rows that keep their place (a prefix: rows before the first that leaves or moves) are not copied.
        var same = 0;
        while (same < host.Length && host[same] == same) same++;
        // Rows leaving with the rest in order (a call finished): the rest move down in place. Otherwise (beams
        // following their parents) they are gathered. Self-attention moves only its filled positions.
        var down = Increasing(host);
        if (down && host.Length > 0 && host[0] > 0)
        {
            // Rows leave from the front: the cache rows start further into the stores instead of moving.
            var front = host[0];
            _rowShift += front;
            for (var j = 0; j < host.Length; j++) host[j] -= front;
            same = 0;
            while (same < host.Length && host[same] == same) same++;
        }
        else if (!down) Normalize(BatchSize);
        SelectSelfRows(index, host, same, down);
        SelectCrossRows(index, host, same, down);
        Compact();
    }

    /// <summary>Keeps the cross-attention and source-mask rows <paramref name="index"/> as rows 0..n−1 (the first
    /// <paramref name="same"/> already in place), in place while the stores hold n rows, else in new stores.</summary>
    private void SelectCrossRows(Tensor index, long[] host, int same, bool down)
    {
        var n = index.shape[0];
        if (n <= CrossStoreRows)
        {
            if (down)
            {
                foreach (var (stores, _, i, _) in CrossSlots())
                    using (var shifted = stores[i].narrow(0, _rowShift, CrossStoreRows - _rowShift)) MoveRowsDown(shifted, host, same);
                using (var shifted = _maskStore.narrow(0, _rowShift, CrossStoreRows - _rowShift)) MoveRowsDown(shifted, host, same);
            }
            else if (same < n)
            {
                using var moved = index.narrow(0, same, n - same);
                foreach (var (stores, views, i, _) in CrossSlots().Append((new[] { _maskStore }, new[] { _sourceMask }, 0, 3L)))
                {
                    using var picked = views[i].index_select(0, moved); // gathered first: sources and targets may overlap
                    using var target = stores[i].narrow(0, same, n - same);
                    target.copy_(picked);
                }
            }
        }
        else
        {
            foreach (var (stores, views, i, _) in CrossSlots()) Replace(ref stores[i], views[i].index_select(0, index).DetachFromDisposeScope());
            Replace(ref _maskStore, _sourceMask.index_select(0, index).DetachFromDisposeScope());
        }
        CrossView(n);
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
        foreach (var t in _selfKeys.Concat(_selfValues).Concat(_keyStores).Concat(_valueStores).Concat(_crossKeys).Concat(_crossValues)
            .Concat(_crossKeyStores).Concat(_crossValueStores))
            t?.Dispose();
        _sourceMask.Dispose();
        _maskStore.Dispose();
        ReleaseStep();
    }
}
