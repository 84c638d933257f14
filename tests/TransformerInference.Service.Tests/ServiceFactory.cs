using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using TransformerInference.Hosting;

namespace TransformerInference.Service.Tests;

/// <summary>The translation service in process with the bundled demo model, loaded before the first request.</summary>
public class ServiceFactory : WebApplicationFactory<Program>
{
    /// <summary>The demo sentence and its reference translation (the sample's CI check).</summary>
    public const string English = "I love you so much";
    public const string Nepali = "म तपाईंलाई एकदम धेरै माया गर्छु";

    protected override void ConfigureWebHost(IWebHostBuilder builder)
    {
        builder.UseEnvironment("Production");
        builder.ConfigureServices(services => services.Configure<TranslatorHostingOptions>(o => o.WaitForLoad = true));
    }

    /// <summary>The hosted demo translator.</summary>
    public HostedTranslator Demo => Services.GetRequiredService<ITranslatorProvider>().Get("demo");
}

/// <summary>One service for all API test classes (loading the model once).</summary>
[CollectionDefinition(Name)]
public sealed class ServiceGroup : ICollectionFixture<ServiceFactory>
{
    public const string Name = "service";
}
