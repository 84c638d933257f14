using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using TransformerInference.Hosting;

namespace TransformerInference.Service.Tests;

/// <summary>The hosting package without a web server: registration, validation, loading, health.</summary>
public sealed class HostingTests
{
    private static readonly string Demo = Path.Combine(AppContext.BaseDirectory, "DemoModel");

    private static void DemoFiles(TranslatorHostOptions o)
    {
        o.ModelPath = Path.Combine(Demo, "tmodel.pt");
        o.SourceTokenizerPath = Path.Combine(Demo, "tokenizer_en.json");
        o.TargetTokenizerPath = Path.Combine(Demo, "tokenizer_ne.json");
    }

    [Fact]
    public async Task A_host_loads_named_translators_once_and_disposes_them()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddTranslator("a", DemoFiles);
        builder.Services.AddTranslator("b", o => { DemoFiles(o); o.QueueCapacity = 3; });
        builder.Services.Configure<TranslatorHostingOptions>(o => o.WaitForLoad = true);
        Translator first;
        using (var host = builder.Build())
        {
            await host.StartAsync();
            var provider = host.Services.GetRequiredService<ITranslatorProvider>();
            Assert.Equal(new[] { "a", "b" }, provider.Names);
            Assert.Same(provider.Get("a"), provider.Get(null));
            Assert.Same(provider.Get("b"), host.Services.GetRequiredKeyedService<HostedTranslator>("b"));
            Assert.Equal(TranslatorState.Ready, provider.Get("b").State);
            Assert.Equal(3, provider.Get("b").Options.QueueCapacity);
            first = provider.Get("a").Translator;
            Assert.Same(first, provider.Get("a").Translator);
            Assert.Equal("a", first.Name);
            Assert.Equal("म तपाईंलाई एकदम धेरै माया गर्छु", (await provider.Get("a").TranslateAsync(new[] { "I love you so much" }))[0].Text);
            Assert.Throws<KeyNotFoundException>(() => provider.Get("c"));
            await host.StopAsync();
        }
        Assert.Throws<ObjectDisposedException>(() => first.Translate("I love you"));
    }

    [Fact]
    public async Task Logs_the_load_and_the_translators_warnings()
    {
        var logs = new CapturingLogs();
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders().AddProvider(logs).AddFilter<CapturingLogs>(null, LogLevel.Debug);
        builder.Services.AddTranslator("cut", o => { DemoFiles(o); o.Truncate = true; });
        builder.Services.Configure<TranslatorHostingOptions>(o => o.WaitForLoad = true);
        using var host = builder.Build();
        await host.StartAsync();
        var translator = host.Services.GetRequiredService<ITranslatorProvider>().Get("cut");
        var layers = translator.Translator.Model.Config.EncoderLayers;
        Assert.Contains(logs.Entries, e => e.Level == LogLevel.Information && e.Message.StartsWith("Translator cut loaded: seed, " + layers, StringComparison.Ordinal));

        var limit = translator.Translator.Model.MaxSourceLength;
        await translator.TranslateAsync(new[] { string.Join(" ", Enumerable.Repeat("love", 100)) });
        Assert.Contains(logs.Entries, e => e.Level == LogLevel.Warning && e.Message == $"Translator cut: an input of 102 tokens was cut to the model's {limit}");
        Assert.Contains(logs.Entries, e => e.Level == LogLevel.Debug && e.Message.StartsWith("Translator cut: 1 texts, ", StringComparison.Ordinal));
        await host.StopAsync();
    }

    [Fact]
    public async Task Invalid_options_stop_the_host_at_start_naming_the_field()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddTranslator("broken", o => { DemoFiles(o); o.SourceTokenizerPath = "/nowhere/tokenizer.json"; o.QueueCapacity = 0; });
        using var host = builder.Build();
        var e = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());
        Assert.Contains("Translator 'broken': SourceTokenizerPath '/nowhere/tokenizer.json' does not exist.", e.Failures);
        Assert.Contains("Translator 'broken': QueueCapacity must be positive, got 0.", e.Failures);
        Assert.Throws<ArgumentException>(() => new ServiceCollection().AddTranslator("x", DemoFiles).AddTranslator("x", DemoFiles));
    }

    [Fact]
    public async Task Health_is_unhealthy_while_loading_or_failed_and_degraded_over_the_threshold()
    {
        var release = new ManualResetEventSlim();
        var options = new TranslatorHostOptions { QueueCapacity = 4, DegradedQueueLength = 2 };
        DemoFiles(options);
        using var slow = new HostedTranslator("slow", options, NullLogger.Instance, () =>
        {
            release.Wait();
            return Translator.Load(options.ModelPath!, options.SourceTokenizerPath!, options.TargetTokenizerPath!);
        });
        using var failing = new HostedTranslator("failing", options, NullLogger.Instance, () => throw new InvalidDataException("corrupt weights"));
        var check = new TranslatorHealthCheck(new Provider(slow));
        var loading = slow.LoadAsync();
        var result = await check.CheckHealthAsync(new HealthCheckContext());
        Assert.Equal(HealthStatus.Unhealthy, result.Status);
        Assert.Contains("Loading: slow", result.Description);
        Assert.Throws<TranslatorUnavailableException>(() => slow.Translator);

        release.Set();
        await loading;
        Assert.Equal(HealthStatus.Healthy, (await check.CheckHealthAsync(new HealthCheckContext())).Status);
        using (slow.Admit())
        using (slow.Admit())
        {
            Assert.Equal(HealthStatus.Healthy, (await check.CheckHealthAsync(new HealthCheckContext())).Status);
            using (slow.Admit())
            {
                Assert.Equal(HealthStatus.Degraded, (await check.CheckHealthAsync(new HealthCheckContext())).Status);
                using (slow.Admit())
                {
                    var busy = Assert.Throws<TranslatorBusyException>(() => slow.Admit());
                    Assert.Equal(TimeSpan.FromSeconds(1), busy.RetryAfter);
                }
            }
        }
        Assert.Equal(0, slow.Pending);

        await Assert.ThrowsAsync<InvalidDataException>(() => failing.LoadAsync());
        var failed = await new TranslatorHealthCheck(new Provider(slow, failing)).CheckHealthAsync(new HealthCheckContext());
        Assert.Equal(HealthStatus.Unhealthy, failed.Status);
        Assert.Contains("Failed to load: failing", failed.Description);
        var unavailable = Assert.Throws<TranslatorUnavailableException>(() => failing.Translator);
        Assert.Contains("corrupt weights", unavailable.Message);
    }

    private sealed class Provider(params HostedTranslator[] translators) : ITranslatorProvider
    {
        public IReadOnlyList<string> Names => translators.Select(t => t.Name).ToArray();

        public HostedTranslator Get(string? name = null) => translators.Single(t => name is null ? t == translators[0] : t.Name == name);

        public bool TryGet(string? name, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out HostedTranslator? translator)
        {
            translator = translators.FirstOrDefault(t => name is null || t.Name == name);
            return translator is not null;
        }
    }
}

/// <summary>Keeps every log entry written through it.</summary>
internal sealed class CapturingLogs : ILoggerProvider
{
    public System.Collections.Concurrent.ConcurrentQueue<(LogLevel Level, string Message)> Entries { get; } = new();

    public ILogger CreateLogger(string categoryName) => new Logger(this);

    public void Dispose()
    {
    }

    private sealed class Logger(CapturingLogs owner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            owner.Entries.Enqueue((logLevel, formatter(state, exception)));
    }
}
