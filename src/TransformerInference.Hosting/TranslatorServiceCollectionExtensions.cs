using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;

namespace TransformerInference.Hosting;

/// <summary>Registers hosted translators and their health check.</summary>
public static class TranslatorServiceCollectionExtensions
{
    /// <summary>
    /// Registers a translator named <paramref name="name"/>: its options are validated when the host starts, it is
    /// loaded once in the background and disposed with the host. Resolve it through <see cref="ITranslatorProvider"/>
    /// or as the keyed service <see cref="HostedTranslator"/> with key <paramref name="name"/>.
    /// </summary>
    public static IServiceCollection AddTranslator(this IServiceCollection services, string name, Action<TranslatorHostOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        AddCore(services, name).Configure(configure);
        return services;
    }

    /// <summary>Registers a translator bound to <paramref name="section"/>, named by the section's key.</summary>
    public static IServiceCollection AddTranslator(this IServiceCollection services, IConfigurationSection section)
    {
        ArgumentNullException.ThrowIfNull(section);
        AddCore(services, section.Key).Bind(section);
        return services;
    }

    /// <summary>Registers one translator per child of <paramref name="section"/> (e.g. <c>Translators</c>); returns how many.</summary>
    public static int AddTranslators(this IServiceCollection services, IConfigurationSection section)
    {
        ArgumentNullException.ThrowIfNull(section);
        var children = section.GetChildren().ToList();
        foreach (var child in children) services.AddTranslator(child);
        return children.Count;
    }

    /// <summary>
    /// Adds a health check named <paramref name="name"/> over every hosted translator: Unhealthy while a model loads
    /// or after it failed to load, Degraded while a queue holds more than its
    /// <see cref="TranslatorHostOptions.DegradedQueueLength"/>, Healthy otherwise.
    /// </summary>
    public static IHealthChecksBuilder AddTranslatorHealthCheck(this IHealthChecksBuilder builder, string name = "translators",
        IEnumerable<string>? tags = null) =>
        builder.Add(new HealthCheckRegistration(name, sp => new TranslatorHealthCheck(sp.GetRequiredService<ITranslatorProvider>()),
            HealthStatus.Unhealthy, tags));

    private static OptionsBuilder<TranslatorHostOptions> AddCore(IServiceCollection services, string name)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        var registry = services.FirstOrDefault(d => d.ServiceType == typeof(TranslatorRegistry))?.ImplementationInstance as TranslatorRegistry;
        if (registry is null)
        {
            registry = new TranslatorRegistry();
            services.AddSingleton(registry);
            services.AddSingleton<ITranslatorProvider, TranslatorProvider>();
            services.AddHostedService<TranslatorLoader>();
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<TranslatorHostOptions>, TranslatorHostOptionsValidator>());
            services.AddOptions<TranslatorHostingOptions>();
        }
        if (registry.Names.Contains(name)) throw new ArgumentException($"A translator named '{name}' is already registered.", nameof(name));
        registry.Names.Add(name);
        // Also a keyed service: [FromKeyedServices("name")] HostedTranslator.
        services.AddKeyedSingleton(name, (sp, _) => sp.GetRequiredService<ITranslatorProvider>().Get(name));
        return services.AddOptions<TranslatorHostOptions>(name).ValidateOnStart();
    }
}
