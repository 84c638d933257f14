using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;
using TransformerInference;
using TransformerInference.Hosting;
using TransformerInference.Samples.TranslationService;

var builder = WebApplication.CreateBuilder(args);

// Translators: every child of "Translators" in appsettings.json; with none, the bundled English→Nepali demo model.
if (builder.Services.AddTranslators(builder.Configuration.GetSection("Translators")) == 0)
    builder.Services.AddTranslator(DemoModel.Name, _ => { });
builder.Services.PostConfigure<TranslatorHostOptions>(DemoModel.Name, DemoModel.FillIn);

builder.Services.AddOptions<ServiceLimits>().Bind(builder.Configuration.GetSection("Service")).Validate(l => l.IsValid(),
    "Service limits must be positive.").ValidateOnStart();
builder.Services.AddHealthChecks().AddTranslatorHealthCheck();
builder.Services.AddProblemDetails();
// Translations come back as readable UTF-8 (Devanagari and all), not \u escapes; HTML-sensitive characters stay escaped.
builder.Services.ConfigureHttpJsonOptions(o => o.SerializerOptions.Encoder = TranslationEndpoints.Encoder);
builder.Services.AddOpenApi();
builder.Services.AddOpenTelemetry()
    .WithMetrics(metrics => metrics.AddMeter(TranslatorDiagnostics.Name).AddPrometheusExporter())
    .WithTracing(tracing => tracing.AddSource(TranslatorDiagnostics.Name));
builder.WebHost.ConfigureKestrel((context, kestrel) =>
    kestrel.Limits.MaxRequestBodySize = context.Configuration.GetValue("Service:MaxRequestBytes", ServiceLimits.DefaultMaxRequestBytes));

var app = builder.Build();
app.UseExceptionHandler();
app.UseStatusCodePages();
app.UseDefaultFiles();
app.UseStaticFiles();

app.MapOpenApi();
app.MapHealthChecks("/healthz", new HealthCheckOptions { ResponseWriter = HealthWriter.WriteAsync });
app.MapPrometheusScrapingEndpoint("/metrics");
TranslationEndpoints.Map(app);

app.Run();

/// <summary>The app's entry point (public for <c>WebApplicationFactory</c> in tests).</summary>
public partial class Program;

namespace TransformerInference.Samples.TranslationService
{
    /// <summary>The bundled demo model (samples/Translate/DemoModel, copied next to the app).</summary>
    internal static class DemoModel
    {
        public const string Name = "demo";

        /// <summary>Points the "demo" translator at the bundled files unless configuration names a model.</summary>
        public static void FillIn(TranslatorHostOptions o)
        {
            if (o.ModelPath is not null || o.ModelFolder is not null) return;
            var folder = Path.Combine(AppContext.BaseDirectory, "DemoModel");
            o.ModelPath = Path.Combine(folder, "tmodel.pt");
            o.SourceTokenizerPath = Path.Combine(folder, "tokenizer_en.json");
            o.TargetTokenizerPath = Path.Combine(folder, "tokenizer_ne.json");
        }
    }

    /// <summary>Request limits (section <c>Service</c>): what a request may ask for before it reaches a model.</summary>
    public sealed class ServiceLimits
    {
        /// <summary>The default request body limit.</summary>
        public const int DefaultMaxRequestBytes = 64 * 1024;

        /// <summary>Most texts in one request.</summary>
        public int MaxTexts { get; set; } = 32;

        /// <summary>Most characters in one text.</summary>
        public int MaxTextLength { get; set; } = 2000;

        /// <summary>Largest request body in bytes.</summary>
        public int MaxRequestBytes { get; set; } = DefaultMaxRequestBytes;

        /// <summary>Largest beam.</summary>
        public int MaxBeamSize { get; set; } = 8;

        /// <summary>Most generated tokens a request may ask for.</summary>
        public int MaxNewTokens { get; set; } = 256;

        internal bool IsValid() => MaxTexts > 0 && MaxTextLength > 0 && MaxRequestBytes > 0 && MaxBeamSize > 0 && MaxNewTokens > 0;
    }

    /// <summary>Writes the health report as JSON: overall status and each translator's state and queue.</summary>
    internal static class HealthWriter
    {
        public static Task WriteAsync(HttpContext context, Microsoft.Extensions.Diagnostics.HealthChecks.HealthReport report) =>
            context.Response.WriteAsJsonAsync(new
            {
                status = report.Status.ToString(),
                checks = report.Entries.ToDictionary(e => e.Key, e => new
                {
                    status = e.Value.Status.ToString(),
                    description = e.Value.Description,
                    data = e.Value.Data,
                }),
            });
    }

    /// <summary>Resolves the service limits for handlers.</summary>
    internal static class Limits
    {
        public static ServiceLimits Of(HttpContext context) => context.RequestServices.GetRequiredService<IOptions<ServiceLimits>>().Value;
    }
}
