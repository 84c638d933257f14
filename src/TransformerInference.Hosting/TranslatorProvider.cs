using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace TransformerInference.Hosting;

/// <summary>The host's named translators.</summary>
public interface ITranslatorProvider
{
    /// <summary>Registered names, in registration order; the first is the default.</summary>
    IReadOnlyList<string> Names { get; }

    /// <summary>The translator named <paramref name="name"/>, or the default one when null.</summary>
    /// <exception cref="KeyNotFoundException">No translator has that name.</exception>
    HostedTranslator Get(string? name = null);

    /// <summary>Looks a translator up by name (null: the default).</summary>
    bool TryGet(string? name, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out HostedTranslator? translator);
}

/// <summary>The names registered with <see cref="TranslatorServiceCollectionExtensions.AddTranslator(Microsoft.Extensions.DependencyInjection.IServiceCollection, string, Action{TranslatorHostOptions})"/>.</summary>
internal sealed class TranslatorRegistry
{
    public List<string> Names { get; } = new();
}

/// <summary>Builds each named translator once from its validated options; disposing the provider (with the host)
/// disposes them.</summary>
internal sealed class TranslatorProvider : ITranslatorProvider, IDisposable
{
    private readonly Dictionary<string, HostedTranslator> _translators = new(StringComparer.Ordinal);

    public TranslatorProvider(TranslatorRegistry registry, IOptionsMonitor<TranslatorHostOptions> options, ILoggerFactory loggers)
    {
        Names = registry.Names.ToArray();
        var logger = loggers.CreateLogger("TransformerInference.Hosting");
        foreach (var name in Names) _translators[name] = new HostedTranslator(name, options.Get(name), logger);
    }

    public IReadOnlyList<string> Names { get; }

    public HostedTranslator Get(string? name = null) => TryGet(name, out var translator) ? translator
        : throw new KeyNotFoundException(Names.Count == 0 ? "No translator is registered: call AddTranslator."
            : $"No translator named '{name}'; registered: {string.Join(", ", Names)}.");

    public bool TryGet(string? name, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out HostedTranslator? translator)
    {
        translator = null;
        if (name is null) return Names.Count > 0 && _translators.TryGetValue(Names[0], out translator);
        return _translators.TryGetValue(name, out translator);
    }

    public void Dispose()
    {
        foreach (var translator in _translators.Values) translator.Dispose();
    }
}

/// <summary>Starts every translator loading when the host starts, without holding up start-up (health reports
/// Unhealthy until they are loaded); with <see cref="TranslatorHostingOptions.WaitForLoad"/> start-up waits.</summary>
internal sealed class TranslatorLoader(ITranslatorProvider provider, IOptions<TranslatorHostingOptions> hosting) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var loads = provider.Names.Select(name => provider.Get(name).LoadAsync()).ToArray();
        if (hosting.Value.WaitForLoad) await Task.WhenAll(loads).WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}

/// <summary>Settings shared by all hosted translators.</summary>
public sealed class TranslatorHostingOptions
{
    /// <summary>Hold host start-up until every model is loaded (default false: load in the background).</summary>
    public bool WaitForLoad { get; set; }
}
