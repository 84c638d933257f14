using System.Net;
using System.Text.RegularExpressions;
using TransformerInference.Hosting;
using YamlDotNet.RepresentationModel;

namespace TransformerInference.Service.Tests;

/// <summary>The Kubernetes manifests and the Dockerfile agree with each other and with the app.</summary>
[Collection(ServiceGroup.Name)]
public sealed partial class DeploymentTests(ServiceFactory factory)
{
    private static string Deploy(string file) => Path.Combine(AppContext.BaseDirectory, "deploy", file);

    private static List<YamlMappingNode> Documents(string file)
    {
        var stream = new YamlStream();
        using (var reader = File.OpenText(Deploy(file))) stream.Load(reader);
        return stream.Documents.Select(d => (YamlMappingNode)d.RootNode).ToList();
    }

    private static YamlNode At(YamlNode node, params string[] path) =>
        path.Aggregate(node, (n, key) => ((YamlMappingNode)n).Children[new YamlScalarNode(key)]);

    private static string Text(YamlNode node, params string[] path) => ((YamlScalarNode)At(node, path)).Value!;

    [Fact]
    public async Task Probes_ports_and_image_agree_with_the_app()
    {
        var all = Documents("deployment.yaml").Concat(Documents("hpa.yaml")).ToList();
        var deployment = all.Single(d => Text(d, "kind") == "Deployment");
        var container = (YamlMappingNode)((YamlSequenceNode)At(deployment, "spec", "template", "spec", "containers")).Children.Single();
        var port = (YamlMappingNode)((YamlSequenceNode)At(container, "ports")).Children.Single();
        var portName = Text(port, "name");
        var containerPort = int.Parse(Text(port, "containerPort"));

        // The image listens where the manifest says.
        var dockerfile = File.ReadAllText(Deploy("Dockerfile"));
        Assert.Contains($"EXPOSE {containerPort}", dockerfile, StringComparison.Ordinal);
        Assert.Matches($"\"--urls\", \"http://0\\.0\\.0\\.0:{containerPort}\"", dockerfile);
        Assert.Contains("USER $APP_UID", dockerfile, StringComparison.Ordinal);
        // The publish keeps the LibTorchSharp fix for Debian 12 (on unless turned off).
        var publish = Assert.Single(dockerfile.Split('\n'), l => l.StartsWith("RUN dotnet publish samples/TranslationService/TranslationService.csproj", StringComparison.Ordinal));
        Assert.DoesNotContain("TransformerInferencePatchLibTorchSharp=false", publish, StringComparison.Ordinal);
        Assert.Matches(@"(?m)^FROM .* AS build$[\s\S]*^FROM .*aspnet", dockerfile);

        // Every probe hits the health endpoint on the container's port, and the app answers it.
        using var client = factory.CreateClient();
        foreach (var probe in new[] { "readinessProbe", "livenessProbe", "startupProbe" })
        {
            var path = Text(container, probe, "httpGet", "path");
            var probePort = Text(container, probe, "httpGet", "port");
            Assert.True(probePort == portName || probePort == containerPort.ToString(), $"{probe} port {probePort}");
            using var response = await client.GetAsync(path);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
        Assert.Equal("true", Text(deployment, "spec", "template", "spec", "securityContext", "runAsNonRoot"));

        // Resources: requests within limits.
        Assert.True(Quantity(Text(container, "resources", "requests", "memory")) <= Quantity(Text(container, "resources", "limits", "memory")));
        Assert.True(Quantity(Text(container, "resources", "requests", "cpu")) <= Quantity(Text(container, "resources", "limits", "cpu")));

        // Environment variables name real settings of the app.
        foreach (var env in ((YamlSequenceNode)At(container, "env")).Children)
        {
            var name = Text(env, "name");
            var match = TranslatorSetting().Match(name);
            Assert.True(match.Success, $"unexpected env {name}");
            Assert.NotNull(typeof(TranslatorHostOptions).GetProperty(match.Groups[1].Value));
        }

        // The Service targets the container port; the autoscaler scales this Deployment.
        var svc = all.Single(d => Text(d, "kind") == "Service");
        var svcPort = (YamlMappingNode)((YamlSequenceNode)At(svc, "spec", "ports")).Children.Single();
        Assert.Contains(Text(svcPort, "targetPort"), new[] { portName, containerPort.ToString() });
        Assert.Equal(Text(deployment, "spec", "selector", "matchLabels", "app"), Text(svc, "spec", "selector", "app"));
        var hpa = all.Single(d => Text(d, "kind") == "HorizontalPodAutoscaler");
        Assert.Equal("Deployment", Text(hpa, "spec", "scaleTargetRef", "kind"));
        Assert.Equal(Text(deployment, "metadata", "name"), Text(hpa, "spec", "scaleTargetRef", "name"));
        Assert.True(int.Parse(Text(hpa, "spec", "minReplicas")) <= int.Parse(Text(hpa, "spec", "maxReplicas")));
    }

    /// <summary>A Kubernetes quantity (<c>512Mi</c>, <c>1Gi</c>, <c>500m</c>, <c>2</c>) as a number.</summary>
    private static double Quantity(string q)
    {
        var suffixes = new (string Suffix, double Factor)[] { ("Ki", 1024), ("Mi", 1 << 20), ("Gi", 1 << 30), ("m", 1e-3) };
        foreach (var (suffix, factor) in suffixes)
            if (q.EndsWith(suffix, StringComparison.Ordinal)) return double.Parse(q[..^suffix.Length], System.Globalization.CultureInfo.InvariantCulture) * factor;
        return double.Parse(q, System.Globalization.CultureInfo.InvariantCulture);
    }

    [GeneratedRegex("^Translators__demo__([A-Za-z]+)$")]
    private static partial Regex TranslatorSetting();
}
