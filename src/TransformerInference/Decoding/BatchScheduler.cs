using System.Collections.Concurrent;
using static TorchSharp.torch;

namespace TransformerInference.Decoding;

/// <summary>
/// In-flight batching: one decode loop, on its own thread, owns the model and a running batch; calls submitted while
/// it decodes join that batch at the next step boundary (their encoder runs, their rows enter the KV cache) and each
/// call's rows leave as soon as its search is over. Every call keeps its own search and options (greedy, beam,
/// seeded sampling, logits processors) and gets what it would get decoded alone. Callers wait on a task, holding no
/// thread; cancelling a call removes only its rows.
/// </summary>
/// <remarks>The scheduler sees the model only through <see cref="ISeq2SeqModel"/> and never the search rules: it
/// slices each step's scores among the calls and follows the rows each call keeps. A
/// <see cref="Translator"/> uses one; a server can use one directly over <see cref="Translator.Model"/>.</remarks>
public sealed class BatchScheduler : IDisposable
{
    private readonly ISeq2SeqModel _model;
    private readonly int _maxBatchSize, _maxBatchTokens;
    private readonly ConcurrentQueue<Request> _pending = new();
    private readonly SemaphoreSlim _signal = new(0);
    private readonly Thread _thread;
    private volatile bool _stopping;
    private long _joinedRunning;

    /// <summary>Starts the decode loop for <paramref name="model"/>.</summary>
    /// <param name="model">The model; the scheduler is its only user while it runs.</param>
    /// <param name="maxBatchSize">Most input sequences decoding together (a call bigger than this runs alone).</param>
    /// <param name="maxBatchTokens">Most padded source tokens in the batch: inputs × the longest source.</param>
    /// <exception cref="ArgumentOutOfRangeException">A limit is not positive.</exception>
    public BatchScheduler(ISeq2SeqModel model, int maxBatchSize = 32, int maxBatchTokens = 8192)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatchSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatchTokens, 1);
        _model = model;
        _maxBatchSize = maxBatchSize;
        _maxBatchTokens = maxBatchTokens;
        _thread = new Thread(Loop) { IsBackground = true, Name = "TransformerInference decode loop" };
        _thread.Start();
    }

    /// <summary>Called with +1 when a call is queued and −1 when it is admitted to the batch or leaves the queue
    /// (queue-length metrics). Runs on the caller's or the decode thread.</summary>
    internal Action<long>? QueueChanged { get; init; }

    /// <summary>Calls that joined a batch already decoding (a measure of sharing, for tests and metrics).</summary>
    public long JoinedRunningBatches => Interlocked.Read(ref _joinedRunning);

    /// <summary>
    /// Generates target sequences for <paramref name="sources"/> (encoder inputs framed as the model expects) in the
    /// shared batch; results equal <see cref="Generator.Generate"/> on the same call.
    /// </summary>
    /// <param name="sources">Encoder input ids per sequence.</param>
    /// <param name="options">Search options of this call (default greedy).</param>
    /// <param name="onToken">Called on the decode thread with (input index, token id) as tokens are chosen (greedy and
    /// sampling). Keep it short: the whole batch waits for it.</param>
    /// <param name="cancellationToken">Cancels this call: its rows leave at the next step boundary.</param>
    /// <returns>Per input, its hypotheses best first.</returns>
    /// <exception cref="ArgumentException">An option or input is unusable (thrown before anything is queued).</exception>
    /// <exception cref="ObjectDisposedException">The scheduler was disposed.</exception>
    public Task<IReadOnlyList<IReadOnlyList<Hypothesis>>> GenerateAsync(IReadOnlyList<IReadOnlyList<int>> sources,
        DecodingOptions? options = null, Action<int, int>? onToken = null, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_stopping, this);
        var (prepared, maxNew) = Generator.Prepare(_model, sources, options);
        if (sources.Count == 0) return Task.FromResult<IReadOnlyList<IReadOnlyList<Hypothesis>>>(Array.Empty<IReadOnlyList<Hypothesis>>());
        if (cancellationToken.IsCancellationRequested) return Task.FromCanceled<IReadOnlyList<IReadOnlyList<Hypothesis>>>(cancellationToken);
        var request = new Request(sources.Select(s => (IReadOnlyList<int>)s.ToArray()).ToArray(), prepared, maxNew, onToken, cancellationToken);
        // A cancelled call completes at once; the loop drops its rows at the next step boundary.
        request.Registration = cancellationToken.Register(() =>
        {
            request.Completion.TrySetCanceled(cancellationToken);
            _signal.Release();
        });
        QueueChanged?.Invoke(1);
        _pending.Enqueue(request);
        _signal.Release();
        if (_stopping && request.Completion.TrySetException(new ObjectDisposedException(nameof(BatchScheduler)))) request.Registration.Dispose();
        return request.Completion.Task;
    }

    /// <summary>Stops the decode loop; calls still queued or decoding fail with <see cref="ObjectDisposedException"/>.</summary>
    public void Dispose()
    {
        if (_stopping) return;
        _stopping = true;
        _signal.Release();
        if (Thread.CurrentThread != _thread) _thread.Join();
        _signal.Dispose();
    }

    /// <summary>One call: its inputs, options, search and the task its caller awaits.</summary>
    private sealed class Request(IReadOnlyList<IReadOnlyList<int>> sources, DecodingOptions options, int maxNew, Action<int, int>? onToken,
        CancellationToken cancellationToken)
    {
        public IReadOnlyList<IReadOnlyList<int>> Sources { get; } = sources;
        public DecodingOptions Options { get; } = options;
        public int MaxNew { get; } = maxNew;
        public Action<int, int>? OnToken { get; } = onToken;
        public CancellationToken CancellationToken { get; } = cancellationToken;
        public CancellationTokenRegistration Registration { get; set; }
        public TaskCompletionSource<IReadOnlyList<IReadOnlyList<Hypothesis>>> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public Search? Search { get; set; }
        public int Width => Sources.Max(s => s.Count);

        /// <summary>Inputs still decoding.</summary>
        public int LiveInputs => Search is null ? Sources.Count : (Search.Rows + Options.BeamSize - 1) / Options.BeamSize;

        public void Finish(Action<TaskCompletionSource<IReadOnlyList<IReadOnlyList<Hypothesis>>>> complete)
        {
            complete(Completion);
            Registration.Dispose();
            Search?.Dispose();
            Search = null;
        }
    }

    private void Loop()
    {
        using var noGrad = inference_mode();
        var active = new List<Request>(); // in row order
        KvCache? cache = null;
        try
        {
            while (!_stopping)
            {
                if (active.Count == 0 && _pending.IsEmpty) _signal.Wait();
                if (_stopping) break;
                DropFinished(active, ref cache);
                Admit(active, ref cache);
                if (active.Count == 0) continue;
                try
                {
                    Step(active, ref cache);
                }
                catch (Exception e)
                {
                    // A failure of the shared step (out of memory, a model error) fails every call in it.
                    foreach (var r in active) r.Finish(c => c.TrySetException(e));
                    active.Clear();
                    cache?.Dispose();
                    cache = null;
                }
            }
        }
        finally
        {
            var disposed = new ObjectDisposedException(nameof(BatchScheduler));
            foreach (var r in active) r.Finish(c => c.TrySetException(disposed));
            while (_pending.TryDequeue(out var r))
            {
                QueueChanged?.Invoke(-1);
                r.Finish(c => c.TrySetException(disposed));
            }
            cache?.Dispose();
        }
    }

    /// <summary>Removes the rows of calls completed from outside (cancelled) before the next step.</summary>
    private static void DropFinished(List<Request> active, ref KvCache? cache)
    {
        if (active.All(r => !r.Completion.Task.IsCompleted)) return;
        var keep = new List<long>();
        var offset = 0;
        var survivors = new List<Request>(active.Count);
        foreach (var r in active)
        {
            var rows = r.Search!.Rows;
            if (r.Completion.Task.IsCompleted) r.Finish(_ => { });
            else
            {
                for (var i = 0; i < rows; i++) keep.Add(offset + i);
                survivors.Add(r);
            }
            offset += rows;
        }
        active.Clear();
        active.AddRange(survivors);
        Follow(keep, offset, ref cache);
    }

    /// <summary>Admits queued calls while the limits allow (always one into an empty batch): encoder, search, rows.</summary>
    private void Admit(List<Request> active, ref KvCache? cache)
    {
        var inputs = active.Sum(r => r.LiveInputs);
        var width = active.Count == 0 ? 0 : active.Max(r => r.Width);
        while (_pending.TryPeek(out var next))
        {
            if (next.Completion.Task.IsCompleted)
            {
                _pending.TryDequeue(out _);
                QueueChanged?.Invoke(-1);
                next.Finish(_ => { });
                continue;
            }
            var w = Math.Max(width, next.Width);
            if (active.Count > 0 && (inputs + next.Sources.Count > _maxBatchSize || (long)(inputs + next.Sources.Count) * w > _maxBatchTokens)) break;
            _pending.TryDequeue(out _);
            QueueChanged?.Invoke(-1);
            try
            {
                // The search outlives this admission: created outside its dispose scope.
                next.Search = Search.Create(_model, next.Sources, next.Options, next.MaxNew, next.OnToken);
                using var scope = NewDisposeScope();
                KvCache fresh;
                using (var src = Generator.Batch(_model, next.Sources)) fresh = _model.Start(src, next.MaxNew);
                try
                {
                    if (!Generator.IsIdentity(next.Search.InitialRows, next.Sources.Count))
                    {
                        using var expand = tensor(next.Search.InitialRows.Select(i => (long)i).ToArray());
                        fresh.Reorder(expand);
                    }
                }
                catch
                {
                    fresh.Dispose();
                    throw;
                }
                if (cache is null) cache = fresh;
                else
                {
                    cache.Merge(fresh);
                    Interlocked.Increment(ref _joinedRunning);
                }
                active.Add(next);
                inputs += next.Sources.Count;
                width = w;
            }
            catch (Exception e)
            {
                next.Finish(c => c.TrySetException(e));
            }
        }
    }

    /// <summary>One decoder step for every row; each call's search takes its slice of the scores.</summary>
    private void Step(List<Request> active, ref KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var feed = new List<long>();
        foreach (var r in active) r.Search!.Feed(feed);
        var total = feed.Count;
        var logits = _model.Step(tensor(feed.ToArray(), new long[] { total, 1 }).to(_model.Device), cache!);
        var keep = new List<long>(total);
        var offset = 0;
        var survivors = new List<Request>(active.Count);
        foreach (var r in active)
        {
            var search = r.Search!;
            var rows = search.Rows;
            try
            {
                foreach (var k in search.Advance(logits.narrow(0, offset, rows))) keep.Add(offset + k);
                if (search.Rows == 0)
                {
                    var results = search.Results();
                    r.Finish(c => c.TrySetResult(results));
                }
                else survivors.Add(r);
            }
            catch (Exception e)
            {
                // This call's search failed (e.g. its token callback threw): only its rows leave.
                keep.RemoveAll(k => k >= offset && k < offset + rows);
                r.Finish(c => c.TrySetException(e));
            }
            offset += rows;
        }
        active.Clear();
        active.AddRange(survivors);
        Follow(keep, total, ref cache);
    }

    /// <summary>Keeps the cache rows named by <paramref name="keep"/> (or frees the cache when none is left).</summary>
    private static void Follow(List<long> keep, int rows, ref KvCache? cache)
    {
        if (keep.Count == 0)
        {
            cache?.Dispose();
            cache = null;
            return;
        }
        if (keep.Count == rows && keep.Select((k, i) => k == i).All(b => b)) return;
        using var order = tensor(keep.ToArray());
        cache!.Reorder(order);
    }
}
