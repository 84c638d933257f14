using System.Collections.Concurrent;
using System.Diagnostics;
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
    private readonly long[] _profile = new long[8]; // decode-thread time per phase (Stopwatch ticks); steps; rows; encoder; join

    /// <summary>Where the decode thread's time went since the last reset (benchmark only): admission (encoder and
    /// cache join), model step, searches, cache reorder — in ms — then the steps taken and rows summed over them.</summary>
    internal (double Admit, double Model, double Search, double Follow, long Steps, long Rows, double Encoder, double Join) Profile =>
        (Ms(0), Ms(1), Ms(2), Ms(3), _profile[4], _profile[5], Ms(6), Ms(7));

    internal void ResetProfile() => Array.Clear(_profile);

    private double Ms(int i) => _profile[i] * 1000.0 / Stopwatch.Frequency;

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
                var t0 = Stopwatch.GetTimestamp();
                DropFinished(active, ref cache);
                Admit(active, ref cache);
                _profile[0] += Stopwatch.GetTimestamp() - t0;
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

    /// <summary>Padded source rows one encoder run of joining calls may hold. Measured (base size, 1 thread, our
    /// kernels at every row count): 16 one-sentence calls of 12–27 tokens took 257 ms encoded one by one, 227 ms in
    /// length-sorted groups under 128 rows, 219 ms under 256 and 245 ms as one padded batch.</summary>
    internal const int EncoderGroupRows = 127;

    /// <summary>Admits queued calls while the limits allow (always one into an empty batch): their searches, their
    /// encoders (calls of similar source length encoded together) and their rows, joined to the cache at once.</summary>
    private void Admit(List<Request> active, ref KvCache? cache)
    {
        var inputs = active.Sum(r => r.LiveInputs);
        var width = active.Count == 0 ? 0 : active.Max(r => r.Width);
        var admitted = new List<Request>();
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
            if (active.Count + admitted.Count > 0
                && (inputs + next.Sources.Count > _maxBatchSize || (long)(inputs + next.Sources.Count) * w > _maxBatchTokens)) break;
            _pending.TryDequeue(out _);
            QueueChanged?.Invoke(-1);
            try
            {
                // The search outlives this admission: created outside any dispose scope.
                next.Search = Search.Create(_model, next.Sources, next.Options, next.MaxNew, next.OnToken);
                admitted.Add(next);
                inputs += next.Sources.Count;
                width = w;
            }
            catch (Exception e)
            {
                next.Finish(c => c.TrySetException(e));
            }
        }
        if (admitted.Count == 0) return;
        var hadCache = cache is not null;

        // Encoder runs: calls sorted by source length, grouped while the padded rows stay small.
        var joined = new List<(Request Request, KvCache Cache)>();
        var fresh = new List<KvCache>();
        try
        {
            var group = new List<Request>();
            foreach (var r in admitted.OrderBy(r => r.Width))
            {
                if (group.Count > 0 && (group.Sum(g => g.Sources.Count) + r.Sources.Count) * (long)r.Width > EncoderGroupRows)
                {
                    Encode(group, fresh, joined);
                    group.Clear();
                }
                group.Add(r);
            }
            Encode(group, fresh, joined);
            if (fresh.Count == 0) return;
            var t0 = Stopwatch.GetTimestamp();
            if (cache is null)
            {
                var first = fresh[0];
                cache = first;
                fresh.RemoveAt(0);
                Interlocked.Add(ref _joinedRunning, joined.Count(j => j.Cache != first));
            }
            else Interlocked.Add(ref _joinedRunning, joined.Count);
            cache.Merge(fresh);
            fresh.Clear();
            _profile[7] += Stopwatch.GetTimestamp() - t0;
            active.AddRange(joined.Select(j => j.Request));
        }
        catch (Exception e)
        {
            // The merge failed (out of memory): the calls admitted now fail, and so do the running ones, whose cache
            // may be half merged.
            foreach (var c in fresh) c.Dispose();
            foreach (var (r, _) in joined) r.Finish(c => c.TrySetException(e));
            if (hadCache) foreach (var r in active) r.Finish(c => c.TrySetException(e));
            active.Clear();
            cache?.Dispose();
            cache = null;
        }
    }

    /// <summary>Runs the encoder once for the calls of <paramref name="group"/> and adds their cache (rows in call
    /// order, each call's rows expanded as its search starts) to <paramref name="fresh"/>. If the shared run fails,
    /// each call is encoded alone so that only a call that fails alone fails.</summary>
    private void Encode(List<Request> group, List<KvCache> fresh, List<(Request, KvCache)> joined)
    {
        if (group.Count == 0) return;
        var t0 = Stopwatch.GetTimestamp();
        try
        {
            var cache = Start(group);
            fresh.Add(cache);
            foreach (var r in group) joined.Add((r, cache));
        }
        catch (Exception) when (group.Count > 1)
        {
            foreach (var r in group) Encode(new List<Request> { r }, fresh, joined);
        }
        catch (Exception e)
        {
            group[0].Finish(c => c.TrySetException(e));
        }
        finally
        {
            _profile[6] += Stopwatch.GetTimestamp() - t0;
        }
    }

    /// <summary>The encoder over every input of <paramref name="group"/>, rows expanded to each search's first rows.</summary>
    private KvCache Start(List<Request> group)
    {
        using var scope = NewDisposeScope();
        var sources = group.SelectMany(r => r.Sources).ToArray();
        KvCache fresh;
        using (var src = Generator.Batch(_model, sources)) fresh = _model.Start(src, group.Max(r => r.MaxNew));
        try
        {
            var rows = new List<int>();
            var offset = 0;
            foreach (var r in group)
            {
                rows.AddRange(r.Search!.InitialRows.Select(i => offset + i));
                offset += r.Sources.Count;
            }
            if (!Generator.IsIdentity(rows, sources.Length))
            {
                using var expand = tensor(rows.Select(i => (long)i).ToArray());
                fresh.Reorder(expand);
            }
            return fresh;
        }
        catch
        {
            fresh.Dispose();
            throw;
        }
    }

    /// <summary>One decoder step for every row; each call's search takes its slice of the scores.</summary>
    private void Step(List<Request> active, ref KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var feed = new List<long>();
        foreach (var r in active) r.Search!.Feed(feed);
        var total = feed.Count;
        var t0 = Stopwatch.GetTimestamp();
        var logits = _model.Step(tensor(feed.ToArray(), new long[] { total, 1 }), cache!);
        var t1 = Stopwatch.GetTimestamp();
        _profile[1] += t1 - t0;
        _profile[4]++;
        _profile[5] += total;
        // Plain greedy calls take their tokens from one log-softmax and argmax over the whole batch and one host copy
        // (row-wise ops: each row's result is what its call alone computes); other searches get their slice.
        long[]? argmax = null;
        float[]? maxima = null;
        if (active.Count(r => r.Search!.TakesArgmax) > 1)
        {
            (argmax, maxima) = Search.Best(logits);
        }
        var keep = new List<long>(total);
        var offset = 0;
        var survivors = new List<Request>(active.Count);
        foreach (var r in active)
        {
            var search = r.Search!;
            var rows = search.Rows;
            try
            {
                var kept = argmax is not null && search.TakesArgmax
                    ? search.Advance(argmax.AsSpan(offset, rows), maxima.AsSpan(offset, rows))
                    : search.Advance(logits.narrow(0, offset, rows));
                foreach (var k in kept) keep.Add(offset + k);
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
        var t2 = Stopwatch.GetTimestamp();
        _profile[2] += t2 - t1;
        Follow(keep, total, ref cache);
        _profile[3] += Stopwatch.GetTimestamp() - t2;
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
