using System.Diagnostics;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using TransformerInference.Decoding;

namespace TransformerInference.Hosting;

/// <summary>The state of a hosted translator's model.</summary>
public enum TranslatorState
{
    /// <summary>Loading in the background; calls are refused with <see cref="TranslatorUnavailableException"/>.</summary>
    Loading,

    /// <summary>Loaded and serving.</summary>
    Ready,

    /// <summary>Loading failed (<see cref="HostedTranslator.LoadError"/>); calls are refused.</summary>
    Failed,
}

/// <summary>Thrown when a hosted translator's queue is full; retry after <see cref="RetryAfter"/> (HTTP 429).</summary>
public sealed class TranslatorBusyException : Exception
{
    /// <summary>Creates the exception.</summary>
    public TranslatorBusyException(string name, int capacity, TimeSpan retryAfter)
        : base($"Translator '{name}' is busy: {capacity} calls are already admitted. Retry after {retryAfter.TotalSeconds:0} s.") =>
        RetryAfter = retryAfter;

    /// <summary>How long the caller should wait.</summary>
    public TimeSpan RetryAfter { get; }
}

/// <summary>Thrown when a hosted translator is still loading or failed to load (HTTP 503).</summary>
public sealed class TranslatorUnavailableException : Exception
{
    /// <summary>Creates the exception.</summary>
    public TranslatorUnavailableException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>What a loaded model is, for logs and the models endpoint.</summary>
/// <param name="Family">The tokenizer family: <c>seed</c> (WordLevel) or the Hugging Face family.</param>
/// <param name="EncoderLayers">Encoder layers.</param>
/// <param name="DecoderLayers">Decoder layers.</param>
/// <param name="DModel">Hidden size.</param>
/// <param name="SourceVocabSize">Source vocabulary.</param>
/// <param name="TargetVocabSize">Target vocabulary.</param>
/// <param name="DType">Weight type.</param>
/// <param name="Device">Device.</param>
/// <param name="LoadMilliseconds">Load time.</param>
public sealed record TranslatorModelInfo(string Family, int EncoderLayers, int DecoderLayers, int DModel, int SourceVocabSize,
    int TargetVocabSize, string DType, string Device, long LoadMilliseconds);

/// <summary>
/// A named translator owned by the host: loaded once in the background, disposed with the host, with a bounded
/// admission queue in front of it (a call beyond <see cref="TranslatorHostOptions.QueueCapacity"/> is refused at
/// once with <see cref="TranslatorBusyException"/> rather than waiting without bound).
/// </summary>
public sealed partial class HostedTranslator : IDisposable
{
    private readonly ILogger _logger;
    private readonly Func<Translator> _load;
    private Task<Translator>? _loading;
    private int _pending;
    private bool _disposed;

    internal HostedTranslator(string name, TranslatorHostOptions options, ILogger logger, Func<Translator>? load = null)
    {
        Name = name;
        Options = options;
        _logger = logger;
        _load = load ?? (() => options.ModelFolder is { } folder
            ? Translator.Load(folder, options.ToTranslatorOptions(name, logger))
            : Translator.Load(options.ModelPath!, options.SourceTokenizerPath!, options.TargetTokenizerPath!, options.ToTranslatorOptions(name, logger)));
    }

    /// <summary>The registered name.</summary>
    public string Name { get; }

    /// <summary>The settings it was registered with.</summary>
    public TranslatorHostOptions Options { get; }

    /// <summary>Where loading stands.</summary>
    public TranslatorState State => _loading switch
    {
        { IsCompletedSuccessfully: true } => TranslatorState.Ready,
        { IsFaulted: true } or { IsCanceled: true } => TranslatorState.Failed,
        _ => TranslatorState.Loading,
    };

    /// <summary>Why loading failed, if it did.</summary>
    public Exception? LoadError => _loading?.Exception?.GetBaseException();

    /// <summary>The loaded model's description (null until loaded).</summary>
    public TranslatorModelInfo? Info { get; private set; }

    /// <summary>Calls admitted now, running or waiting.</summary>
    public int Pending => Volatile.Read(ref _pending);

    /// <summary>Admitted calls above which the health check reports Degraded.</summary>
    public int DegradedQueueLength => Options.DegradedQueueLength ?? Math.Max(1, Options.QueueCapacity / 2);

    /// <summary>Starts loading on a worker thread (once); the task completes when the model is ready.</summary>
    public Task LoadAsync()
    {
        lock (_load)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _loading ??= Task.Run(Load);
        }
    }

    private Translator Load()
    {
        var watch = Stopwatch.StartNew();
        try
        {
            var translator = _load();
            var config = translator.Model.Config;
            Info = new TranslatorModelInfo(Options.ModelFolder is null ? "seed" : "huggingface", config.EncoderLayers, config.DecoderLayers,
                config.DModel, config.SourceVocabSize, config.TargetVocabSize, translator.Model.DType.ToString(),
                translator.Model.Device.ToString(), watch.ElapsedMilliseconds);
            Log.Loaded(_logger, Name, Info.Family, Info.EncoderLayers, Info.DecoderLayers, Info.DModel, Info.SourceVocabSize,
                Info.TargetVocabSize, Info.DType, Info.Device, Info.LoadMilliseconds);
            return translator;
        }
        catch (Exception e)
        {
            Log.LoadFailed(_logger, e, Name, watch.ElapsedMilliseconds);
            throw;
        }
    }

    /// <summary>The loaded translator.</summary>
    /// <exception cref="TranslatorUnavailableException">Still loading, or loading failed.</exception>
    public Translator Translator => State switch
    {
        TranslatorState.Ready => _loading!.Result,
        TranslatorState.Failed => throw new TranslatorUnavailableException($"Translator '{Name}' failed to load: {LoadError?.Message}", LoadError),
        _ => throw new TranslatorUnavailableException($"Translator '{Name}' is still loading."),
    };

    /// <summary>Translates <paramref name="texts"/> through the queue on a worker thread.</summary>
    /// <exception cref="TranslatorBusyException">The queue is full.</exception>
    /// <exception cref="TranslatorUnavailableException">The model is not loaded.</exception>
    /// <exception cref="ArgumentException">An input or option is invalid.</exception>
    public async Task<IReadOnlyList<Translation>> TranslateAsync(IReadOnlyList<string> texts, DecodingOptions? decoding = null,
        CancellationToken cancellationToken = default)
    {
        var translator = Translator;
        using var admission = Admit();
        var watch = Stopwatch.StartNew();
        var result = await Task.Run(() => translator.TranslateDetailed(texts, decoding, cancellationToken), cancellationToken).ConfigureAwait(false);
        Log.Translated(_logger, Name, texts.Count, result.Sum(t => t.Ids.Count), decoding?.BeamSize ?? 1, watch.ElapsedMilliseconds);
        return result;
    }

    /// <summary>Streams one translation piece by piece through the queue; the queue slot is held until the stream ends.</summary>
    /// <exception cref="TranslatorBusyException">The queue is full.</exception>
    /// <exception cref="TranslatorUnavailableException">The model is not loaded.</exception>
    public async IAsyncEnumerable<string> TranslateStreamAsync(string text, DecodingOptions? decoding = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var translator = Translator;
        using var admission = Admit();
        var watch = Stopwatch.StartNew();
        var pieces = 0;
        await foreach (var piece in translator.TranslateStreamAsync(text, decoding, cancellationToken).ConfigureAwait(false))
        {
            pieces++;
            yield return piece;
        }
        Log.Streamed(_logger, Name, pieces, watch.ElapsedMilliseconds);
    }

    internal Admission Admit()
    {
        if (Interlocked.Increment(ref _pending) > Options.QueueCapacity)
        {
            Interlocked.Decrement(ref _pending);
            Log.Refused(_logger, Name, Options.QueueCapacity);
            throw new TranslatorBusyException(Name, Options.QueueCapacity, TimeSpan.FromSeconds(Options.RetryAfterSeconds));
        }
        return new Admission(this);
    }

    /// <summary>A queue slot, released on dispose.</summary>
    internal readonly struct Admission(HostedTranslator owner) : IDisposable
    {
        public void Dispose() => Interlocked.Decrement(ref owner._pending);
    }

    /// <summary>Disposes the model once loading (if started) has finished.</summary>
    public void Dispose()
    {
        Task<Translator>? loading;
        lock (_load)
        {
            if (_disposed) return;
            _disposed = true;
            loading = _loading;
        }
        if (loading is null) return;
        try
        {
            loading.GetAwaiter().GetResult().Dispose();
        }
        catch (Exception) when (loading.IsFaulted || loading.IsCanceled)
        {
            // Loading failed: nothing was loaded, nothing to free.
        }
    }

    /// <summary>The hosting package's log events.</summary>
    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "Translator {Name} loaded: {Family}, {EncoderLayers}+{DecoderLayers} layers, d_model {DModel}, vocabularies {SourceVocab}/{TargetVocab}, {DType} on {Device}, in {LoadMs} ms")]
        public static partial void Loaded(ILogger logger, string name, string family, int encoderLayers, int decoderLayers, int dModel,
            int sourceVocab, int targetVocab, string dType, string device, long loadMs);

        [LoggerMessage(2, LogLevel.Error, "Translator {Name} failed to load after {LoadMs} ms")]
        public static partial void LoadFailed(ILogger logger, Exception e, string name, long loadMs);

        [LoggerMessage(3, LogLevel.Debug, "Translator {Name}: {Texts} texts, {OutputTokens} tokens, beam {Beam}, {Ms} ms")]
        public static partial void Translated(ILogger logger, string name, int texts, int outputTokens, int beam, long ms);

        [LoggerMessage(4, LogLevel.Debug, "Translator {Name}: streamed {Pieces} pieces in {Ms} ms")]
        public static partial void Streamed(ILogger logger, string name, int pieces, long ms);

        [LoggerMessage(5, LogLevel.Warning, "Translator {Name}: queue full ({Capacity} calls), refusing a call")]
        public static partial void Refused(ILogger logger, string name, int capacity);
    }
}
