using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;
using TransformerInference.Decoding;

namespace TransformerInference;

/// <summary>
/// The library's <see cref="System.Diagnostics.Metrics.Meter"/> and <see cref="System.Diagnostics.ActivitySource"/>, both
/// named <see cref="Name"/>: OpenTelemetry (<c>AddMeter("TransformerInference")</c>,
/// <c>AddSource("TransformerInference")</c>) or a <see cref="MeterListener"/> / <see cref="ActivityListener"/> picks
/// them up with no glue. Instruments (all tagged <c>model</c>): <c>transformer_inference.requests</c>,
/// <c>.input_tokens</c>, <c>.output_tokens</c>, <c>.errors</c> (tag <c>error.type</c>), <c>.queue.length</c>
/// (callers waiting for the model), <c>.batch.size</c>, <c>.prefill.duration</c> (seconds from the start of a search
/// to its first token: encoder plus first step) and <c>.decode.token_duration</c> (seconds per later decode step).
/// Each translation call is an activity <c>translate</c> with the model, batch size, token counts and search settings.
/// </summary>
public static class TranslatorDiagnostics
{
    /// <summary>The name of the meter and of the activity source.</summary>
    public const string Name = "TransformerInference";

    /// <summary>The activity source of translation spans.</summary>
    public static ActivitySource ActivitySource { get; } = new(Name, typeof(TranslatorDiagnostics).Assembly.GetName().Version?.ToString());

    /// <summary>The meter of the translation instruments.</summary>
    public static Meter Meter { get; } = new(Name, typeof(TranslatorDiagnostics).Assembly.GetName().Version?.ToString());

    internal static readonly Counter<long> Requests = Meter.CreateCounter<long>("transformer_inference.requests", "{request}", "Translation calls.");
    internal static readonly Counter<long> InputTokens = Meter.CreateCounter<long>("transformer_inference.input_tokens", "{token}", "Encoder input tokens, framing included.");
    internal static readonly Counter<long> OutputTokens = Meter.CreateCounter<long>("transformer_inference.output_tokens", "{token}", "Generated tokens (best hypothesis).");
    internal static readonly Counter<long> Errors = Meter.CreateCounter<long>("transformer_inference.errors", "{error}", "Failed translation calls by exception type.");
    internal static readonly UpDownCounter<long> QueueLength = Meter.CreateUpDownCounter<long>("transformer_inference.queue.length", "{call}", "Calls waiting for the model.");
    internal static readonly Histogram<long> BatchSize = Meter.CreateHistogram<long>("transformer_inference.batch.size", "{sequence}", "Sequences decoded together.");
    internal static readonly Histogram<double> Prefill = Meter.CreateHistogram<double>("transformer_inference.prefill.duration", "s", "Encoder and first decode step of a batch.");
    internal static readonly Histogram<double> DecodeToken = Meter.CreateHistogram<double>("transformer_inference.decode.token_duration", "s", "One decode step after the first.");

    private static readonly Action<ILogger, string, int, int, Exception?> TruncatedMessage = LoggerMessage.Define<string, int, int>(
        LogLevel.Warning, new EventId(1, "InputTruncated"), "Translator {Model}: an input of {Tokens} tokens was cut to the model's {Limit}");

    /// <summary>Warns that an input was cut to the model's source length.</summary>
    internal static void Truncated(ILogger? logger, string model, int tokens, int limit)
    {
        if (logger is not null) TruncatedMessage(logger, model, tokens, limit, null);
    }

    /// <summary>Starts the telemetry of one translation call.</summary>
    internal static CallTelemetry Begin(string model, int texts, DecodingOptions options) => new(model, texts, options);

    /// <summary>Counts calls waiting for a place in the running batch.</summary>
    internal static void Queued(string model, long change) => QueueLength.Add(change, new KeyValuePair<string, object?>("model", model));

    /// <summary>Metrics and the span of one call: the requests counter on start, batch timings, tokens, errors.</summary>
    internal sealed class CallTelemetry : IDisposable
    {
        private readonly KeyValuePair<string, object?> _model;
        private readonly Activity? _activity;
        private long _inputTokens, _outputTokens;

        internal CallTelemetry(string model, int texts, DecodingOptions options)
        {
            _model = new("model", model);
            Requests.Add(1, _model);
            _activity = ActivitySource.StartActivity("translate");
            if (_activity is null) return;
            _activity.SetTag("model", model);
            _activity.SetTag("batch.size", texts);
            _activity.SetTag("search.beam_size", options.BeamSize);
            _activity.SetTag("search.sample", options.Sample);
            if (options.Sample)
            {
                _activity.SetTag("search.temperature", options.Temperature);
                _activity.SetTag("search.top_k", options.TopK);
                _activity.SetTag("search.top_p", options.TopP);
            }
        }

        /// <summary>Runs one batch through <paramref name="generate"/>, timing its first token and later steps.</summary>
        internal async Task<IReadOnlyList<IReadOnlyList<Hypothesis>>> BatchAsync(IReadOnlyList<IReadOnlyList<int>> sources,
            Func<Action<int, int>, Task<IReadOnlyList<IReadOnlyList<Hypothesis>>>> generate, Action<int, int>? onToken = null)
        {
            BatchSize.Record(sources.Count, _model);
            var inputs = sources.Sum(s => (long)s.Count);
            _inputTokens += inputs;
            InputTokens.Add(inputs, _model);
            var start = Stopwatch.GetTimestamp();
            long first = 0;
            var results = await generate((input, token) =>
            {
                if (Interlocked.Read(ref first) == 0) Interlocked.Exchange(ref first, Stopwatch.GetTimestamp());
                onToken?.Invoke(input, token);
            }).ConfigureAwait(false);
            var end = Stopwatch.GetTimestamp();
            var steps = results.Count == 0 ? 0 : results.Max(r => r.Count == 0 ? 0 : r[0].Ids.Count);
            var outputs = results.Sum(r => r.Count == 0 ? 0L : r[0].Ids.Count);
            _outputTokens += outputs;
            OutputTokens.Add(outputs, _model);
            if (first != 0)
            {
                // Greedy and sampling report each token: the first marks the end of prefill.
                Prefill.Record(Stopwatch.GetElapsedTime(start, first).TotalSeconds, _model);
                if (steps > 1) DecodeToken.Record(Stopwatch.GetElapsedTime(first, end).TotalSeconds / (steps - 1), _model);
            }
            else if (steps > 0)
            {
                // Beam search reports no tokens on the way: the mean step time is all there is.
                DecodeToken.Record(Stopwatch.GetElapsedTime(start, end).TotalSeconds / steps, _model);
            }
            return results;
        }

        /// <summary>Counts a failed call by its exception type and marks the span.</summary>
        internal void Fail(Exception e)
        {
            var type = e.GetType().Name;
            Errors.Add(1, _model, new("error.type", type));
            _activity?.SetStatus(ActivityStatusCode.Error, e.Message);
            _activity?.SetTag("error.type", type);
        }

        /// <summary>Ends the span with the token totals.</summary>
        public void Dispose()
        {
            if (_activity is null) return;
            _activity.SetTag("tokens.input", _inputTokens);
            _activity.SetTag("tokens.output", _outputTokens);
            _activity.Dispose();
        }
    }
}
