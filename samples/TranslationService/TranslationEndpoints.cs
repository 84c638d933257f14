using System.Diagnostics;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Unicode;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Http.HttpResults;
using TransformerInference.Decoding;
using TransformerInference.Hosting;

namespace TransformerInference.Samples.TranslationService;

/// <summary>A translation request: <c>text</c> or <c>texts</c>, optionally a model name and search options.</summary>
/// <param name="Text">One text.</param>
/// <param name="Texts">Several texts (not with <paramref name="Text"/>).</param>
/// <param name="Model">A translator name from <c>GET /v1/models</c>; null: the default.</param>
/// <param name="Options">Search options; null: the model's defaults.</param>
public sealed record TranslateRequest(string? Text, IReadOnlyList<string>? Texts, string? Model, SearchOptions? Options);

/// <summary>Search options a request may set.</summary>
/// <param name="Search"><c>greedy</c> (default), <c>beam</c> or <c>sample</c>.</param>
/// <param name="BeamSize">Beam width for <c>beam</c> (default 4).</param>
/// <param name="MaxNewTokens">Most generated tokens.</param>
/// <param name="LengthPenalty">Beam length penalty.</param>
/// <param name="Temperature">Sampling temperature.</param>
/// <param name="TopK">Sample among the k most likely tokens.</param>
/// <param name="TopP">Nucleus sampling mass.</param>
/// <param name="Seed">Sampling seed.</param>
/// <param name="RepetitionPenalty">Penalty on repeated tokens.</param>
/// <param name="NoRepeatNgramSize">Forbid repeating n-grams of this size.</param>
public sealed record SearchOptions(string? Search, int? BeamSize, int? MaxNewTokens, double? LengthPenalty, double? Temperature,
    int? TopK, double? TopP, int? Seed, double? RepetitionPenalty, int? NoRepeatNgramSize);

/// <summary>Translations in request order.</summary>
/// <param name="Model">The translator that made them.</param>
/// <param name="Translations">One per input text.</param>
public sealed record TranslateResponse(string Model, IReadOnlyList<TranslationResult> Translations);

/// <summary>One translation.</summary>
/// <param name="Text">The translated text.</param>
/// <param name="Score">The search's score of the best hypothesis (log-probability, length-penalised for beams).</param>
public sealed record TranslationResult(string Text, double Score);

/// <summary>One hosted model.</summary>
/// <param name="Name">Its name.</param>
/// <param name="Default">Whether requests without a model get it.</param>
/// <param name="State">Loading, Ready or Failed.</param>
/// <param name="Pending">Calls admitted now.</param>
/// <param name="QueueCapacity">Most calls admitted at once.</param>
/// <param name="Info">What the model is, once loaded.</param>
public sealed record ModelDescription(string Name, bool Default, string State, int Pending, int QueueCapacity, TranslatorModelInfo? Info);

/// <summary>The hosted models.</summary>
/// <param name="Models">Every registered translator.</param>
public sealed record ModelsResponse(IReadOnlyList<ModelDescription> Models);

/// <summary>The HTTP API: <c>POST /v1/translate</c>, <c>POST /v1/translate/stream</c> (server-sent events),
/// <c>GET /v1/models</c>. Bad requests are 400 problem details; a full queue is 429 with <c>Retry-After</c>.</summary>
internal static class TranslationEndpoints
{
    /// <summary>Escapes HTML-sensitive characters only, so translations stay readable in responses.</summary>
    public static readonly JavaScriptEncoder Encoder = JavaScriptEncoder.Create(UnicodeRanges.All);

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Encoder = Encoder,
    };

    public static void Map(IEndpointRouteBuilder app)
    {
        var v1 = app.MapGroup("/v1");
        v1.MapPost("/translate", TranslateAsync)
            .Accepts<TranslateRequest>("application/json")
            .Produces<TranslateResponse>()
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status429TooManyRequests)
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable)
            .WithName("Translate")
            .WithSummary("Translates one text or several.");
        v1.MapPost("/translate/stream", StreamAsync)
            .Accepts<TranslateRequest>("application/json")
            .Produces(StatusCodes.Status200OK, contentType: "text/event-stream")
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status429TooManyRequests)
            .WithName("TranslateStream")
            .WithSummary("Streams one translation as server-sent events: 'data: {\"text\"}' per piece, then 'event: done'.");
        v1.MapGet("/models", Models).WithName("Models").WithSummary("Lists the hosted translators.");
    }

    private static Ok<ModelsResponse> Models(ITranslatorProvider provider) =>
        TypedResults.Ok(new ModelsResponse(provider.Names.Select((name, i) =>
        {
            var t = provider.Get(name);
            return new ModelDescription(name, i == 0, t.State.ToString(), t.Pending, t.Options.QueueCapacity, t.Info);
        }).ToArray()));

    private static async Task<IResult> TranslateAsync(HttpContext context, ITranslatorProvider provider)
    {
        var (request, problem) = await ReadAsync(context).ConfigureAwait(false);
        if (problem is not null) return problem;
        var limits = Limits.Of(context);
        var texts = request!.Texts ?? (request.Text is null ? null : new[] { request.Text });
        if (Validate(request, texts, limits, provider, out var translator, out var decoding) is { } invalid) return invalid;
        try
        {
            var results = await translator!.TranslateAsync(texts!, decoding, context.RequestAborted).ConfigureAwait(false);
            return TypedResults.Ok(new TranslateResponse(translator.Name,
                results.Select(r => new TranslationResult(r.Text, r.Hypotheses.Count > 0 ? r.Hypotheses[0].Hypothesis.Score : 0)).ToArray()));
        }
        catch (Exception e) when (Map(e, context) is { } mapped)
        {
            return mapped;
        }
    }

    private static async Task StreamAsync(HttpContext context, ITranslatorProvider provider)
    {
        var (request, problem) = await ReadAsync(context).ConfigureAwait(false);
        HostedTranslator? translator = null;
        DecodingOptions? decoding = null;
        if (problem is null)
        {
            problem = request!.Texts is not null
                ? BadRequest("texts", "The stream endpoint takes one 'text'.")
                : Validate(request, request.Text is null ? null : new[] { request.Text }, Limits.Of(context), provider, out translator, out decoding);
        }
        if (problem is not null)
        {
            await problem.ExecuteAsync(context).ConfigureAwait(false);
            return;
        }

        var aborted = context.RequestAborted;
        var watch = Stopwatch.StartNew();
        var pieces = translator!.TranslateStreamAsync(request!.Text!, decoding, aborted).GetAsyncEnumerator(aborted);
        try
        {
            bool more;
            try
            {
                // The first piece (or the first failure: a bad input, a full queue) comes before any header is sent.
                more = await pieces.MoveNextAsync().ConfigureAwait(false);
            }
            catch (Exception e) when (Map(e, context) is { } mapped)
            {
                if (!aborted.IsCancellationRequested) await mapped.ExecuteAsync(context).ConfigureAwait(false);
                return;
            }
            context.Response.ContentType = "text/event-stream";
            context.Response.Headers.CacheControl = "no-cache";
            context.Response.Headers["X-Accel-Buffering"] = "no";
            var count = 0;
            try
            {
                while (more)
                {
                    count++;
                    await WriteEventAsync(context, null, new { text = pieces.Current }, aborted).ConfigureAwait(false);
                    more = await pieces.MoveNextAsync().ConfigureAwait(false);
                }
                await WriteEventAsync(context, "done", new { model = translator.Name, pieces = count, milliseconds = watch.Elapsed.TotalMilliseconds }, aborted)
                    .ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (aborted.IsCancellationRequested)
            {
                // The client went away: decoding stopped at its next step.
            }
            catch (Exception e) when (e is ArgumentException or TranslatorUnavailableException or InvalidOperationException)
            {
                await WriteEventAsync(context, "error", new { title = "Translation failed", detail = e.Message }, CancellationToken.None)
                    .ConfigureAwait(false);
            }
        }
        finally
        {
            await pieces.DisposeAsync().ConfigureAwait(false);
        }
    }

    private static async Task WriteEventAsync(HttpContext context, string? name, object data, CancellationToken cancellationToken)
    {
        var text = (name is null ? "" : $"event: {name}\n") + $"data: {JsonSerializer.Serialize(data, Json)}\n\n";
        await context.Response.WriteAsync(text, cancellationToken).ConfigureAwait(false);
        await context.Response.Body.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Reads the JSON body; a malformed, oversized or non-JSON body is a problem-details response.</summary>
    private static async Task<(TranslateRequest? Request, IResult? Problem)> ReadAsync(HttpContext context)
    {
        var limits = Limits.Of(context);
        if (context.Request.ContentLength > limits.MaxRequestBytes)
            return (null, TypedResults.Problem($"The request body has {context.Request.ContentLength} bytes; the limit is {limits.MaxRequestBytes}.",
                statusCode: StatusCodes.Status413PayloadTooLarge, title: "Request too large"));
        if (!context.Request.HasJsonContentType())
            return (null, TypedResults.Problem("Send the request as application/json.", statusCode: StatusCodes.Status415UnsupportedMediaType,
                title: "Unsupported media type"));
        try
        {
            var request = await context.Request.ReadFromJsonAsync<TranslateRequest>(Json, context.RequestAborted).ConfigureAwait(false);
            return request is null ? (null, BadRequest("body", "The body is empty (null).")) : (request, null);
        }
        catch (JsonException e)
        {
            return (null, BadRequest("body", $"The body is not a valid request: {e.Message}"));
        }
        catch (BadHttpRequestException e)
        {
            return (null, TypedResults.Problem(e.Message, statusCode: e.StatusCode, title: "Bad request"));
        }
    }

    /// <summary>Checks texts, model and options against the limits; null when the request may run.</summary>
    private static IResult? Validate(TranslateRequest request, IReadOnlyList<string>? texts, ServiceLimits limits, ITranslatorProvider provider,
        out HostedTranslator? translator, out DecodingOptions? decoding)
    {
        translator = null;
        decoding = null;
        var errors = new Dictionary<string, string[]>();
        void Error(string field, string message) => errors[field] = new[] { message };
        if (request.Text is not null && request.Texts is not null) Error("text", "Give 'text' or 'texts', not both.");
        else if (texts is null) Error("text", "Give 'text' (a string) or 'texts' (an array of strings).");
        else if (texts.Count == 0) Error("texts", "'texts' is empty.");
        else if (texts.Count > limits.MaxTexts) Error("texts", $"{texts.Count} texts; the limit is {limits.MaxTexts}.");
        else
        {
            for (var i = 0; i < texts.Count; i++)
            {
                if (texts[i] is null) Error($"texts[{i}]", "A text is null.");
                else if (texts[i].Length > limits.MaxTextLength) Error($"texts[{i}]", $"{texts[i].Length} characters; the limit is {limits.MaxTextLength}.");
            }
        }
        if (!provider.TryGet(request.Model, out translator))
            Error("model", request.Model is null ? "No translator is registered." : $"Unknown model '{request.Model}'; GET /v1/models lists them.");
        if (request.Options is { } o)
        {
            try
            {
                decoding = ToDecoding(o, limits);
            }
            catch (ArgumentException e)
            {
                Error($"options.{e.ParamName ?? "search"}", e.Message);
            }
        }
        return errors.Count == 0 ? null : TypedResults.ValidationProblem(errors, title: "The request is invalid.");
    }

    /// <summary>The search options of a request, within the service's limits.</summary>
    private static DecodingOptions ToDecoding(SearchOptions o, ServiceLimits limits)
    {
        var search = (o.Search ?? (o.BeamSize > 1 ? "beam" : "greedy")).ToLowerInvariant();
        if (search is not ("greedy" or "beam" or "sample"))
            throw new ArgumentException($"Unknown search '{o.Search}': use greedy, beam or sample.", "search");
        var beam = search == "beam" ? o.BeamSize ?? 4 : 1;
        if (o.BeamSize is { } b && search != "beam" && b != 1)
            throw new ArgumentException($"beamSize {b} needs search 'beam'.", "beamSize");
        if (beam < 1 || beam > limits.MaxBeamSize)
            throw new ArgumentException($"beamSize must be between 1 and {limits.MaxBeamSize}, got {beam}.", "beamSize");
        if (o.MaxNewTokens is { } m && (m < 1 || m > limits.MaxNewTokens))
            throw new ArgumentException($"maxNewTokens must be between 1 and {limits.MaxNewTokens}, got {m}.", "maxNewTokens");
        if (search != "sample" && (o.Temperature ?? o.TopP ?? o.TopK ?? o.Seed) is not null)
            throw new ArgumentException("temperature, topK, topP and seed need search 'sample'.", "search");
        var options = new DecodingOptions
        {
            BeamSize = beam,
            Sample = search == "sample",
            MaxNewTokens = o.MaxNewTokens,
            LengthPenalty = o.LengthPenalty ?? 1.0,
            Temperature = o.Temperature ?? 1.0,
            TopK = o.TopK ?? 0,
            TopP = o.TopP ?? 1.0,
            Seed = o.Seed,
            RepetitionPenalty = o.RepetitionPenalty ?? 1.0,
            NoRepeatNgramSize = o.NoRepeatNgramSize ?? 0,
        };
        return options.Validate();
    }

    /// <summary>The response for a failure the caller can act on; null lets anything else reach the exception handler (500).</summary>
    private static IResult? Map(Exception e, HttpContext context)
    {
        switch (e)
        {
            case TranslatorBusyException busy:
                context.Response.Headers.RetryAfter = ((int)Math.Ceiling(busy.RetryAfter.TotalSeconds)).ToString(System.Globalization.CultureInfo.InvariantCulture);
                return TypedResults.Problem(busy.Message, statusCode: StatusCodes.Status429TooManyRequests, title: "Too many requests");
            case TranslatorUnavailableException unavailable:
                context.Response.Headers.RetryAfter = "5";
                return TypedResults.Problem(unavailable.Message, statusCode: StatusCodes.Status503ServiceUnavailable, title: "Model not ready");
            case OperationCanceledException when context.RequestAborted.IsCancellationRequested:
                return TypedResults.Empty; // the client went away; nobody reads this
            case ArgumentException argument:
                return BadRequest(argument.ParamName ?? "text", argument.Message);
            default:
                return null;
        }
    }

    private static ValidationProblem BadRequest(string field, string message) =>
        TypedResults.ValidationProblem(new Dictionary<string, string[]> { [field] = new[] { message } }, title: "The request is invalid.");
}
