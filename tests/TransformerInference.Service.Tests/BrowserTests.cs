using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using OpenQA.Selenium;
using OpenQA.Selenium.Chrome;
using TransformerInference.Decoding;

namespace TransformerInference.Service.Tests;

/// <summary>
/// The page in a real browser: Debian's headless Chromium driven by chromedriver (packages <c>chromium</c> and
/// <c>chromium-driver</c>, installed by <c>.ci/run</c>) against the service on a loopback Kestrel port.
/// </summary>
public sealed class BrowserTests : IDisposable
{
    private const string Chromium = "/usr/bin/chromium", ChromeDriver = "/usr/bin/chromedriver";
    private readonly ServiceFactory _factory = new();
    private readonly string _profile = Directory.CreateTempSubdirectory("ti-chromium-").FullName;

    [Fact]
    public void Page_streams_the_translation_and_switches_search()
    {
        Assert.True(File.Exists(Chromium) && File.Exists(ChromeDriver),
            $"The browser test needs {Chromium} and {ChromeDriver}: apt-get install chromium chromium-driver (.ci/run does).");
        _factory.UseKestrel(0);
        _factory.StartServer();
        var address = _factory.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();

        var service = ChromeDriverService.CreateDefaultService(Path.GetDirectoryName(ChromeDriver)!, Path.GetFileName(ChromeDriver));
        service.SuppressInitialDiagnosticInformation = true;
        var options = new ChromeOptions { BinaryLocation = Chromium };
        options.AddArguments("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
            $"--user-data-dir={_profile}");
        using var driver = new ChromeDriver(service, options, TimeSpan.FromSeconds(60));
        driver.Navigate().GoToUrl(address);

        var source = driver.FindElement(By.Id("source"));
        source.Clear();
        source.SendKeys(ServiceFactory.English);
        driver.FindElement(By.Id("translate")).Click();
        Assert.Equal(ServiceFactory.Nepali, WaitForTranslation(driver));
        Assert.Matches(@"\d+ tokens in [\d.]+ s: [\d.]+ tokens/s", driver.FindElement(By.Id("stats")).Text);
        Assert.Equal("", driver.FindElement(By.Id("error")).Text);

        // Beam search through the page gives what the library's beam search gives.
        driver.FindElement(By.CssSelector("input[name=search][value=beam]")).Click();
        var beam = driver.FindElement(By.Id("beamSize"));
        beam.Clear();
        beam.SendKeys("3");
        driver.FindElement(By.Id("translate")).Click();
        var expected = _factory.Demo.Translator.Translate(ServiceFactory.English, new DecodingOptions { BeamSize = 3 });
        Assert.Equal(expected, WaitForTranslation(driver));

        // A bad request shows the service's problem details on the page.
        beam.Clear();
        beam.SendKeys("99");
        driver.FindElement(By.Id("translate")).Click();
        var error = Poll(() => driver.FindElement(By.Id("error")).Text, e => e.Length > 0);
        Assert.StartsWith("400", error);
        Assert.Contains("beamSize", error, StringComparison.Ordinal);
    }

    private static string WaitForTranslation(ChromeDriver driver)
    {
        Poll(() => driver.FindElement(By.Id("output")).GetAttribute("data-done") ?? "", done => done == "true");
        return driver.FindElement(By.Id("output")).Text;
    }

    private static string Poll(Func<string> read, Func<string, bool> ready)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (true)
        {
            var value = read();
            if (ready(value)) return value;
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"The page did not get there in 30 s; last value '{value}'.");
            Thread.Sleep(50);
        }
    }

    public void Dispose()
    {
        _factory.Dispose();
        try
        {
            Directory.Delete(_profile, recursive: true);
        }
        catch (IOException)
        {
            // Chromium may still be closing its profile; the temp folder is cleaned up by the system.
        }
    }
}
