using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace TransformerInference.Hosting;

/// <summary>Unhealthy until every translator is loaded (or when one failed), Degraded when a queue is long.</summary>
internal sealed class TranslatorHealthCheck(ITranslatorProvider provider) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var data = new Dictionary<string, object>();
        var loading = new List<string>();
        var failed = new List<string>();
        var busy = new List<string>();
        foreach (var name in provider.Names)
        {
            var t = provider.Get(name);
            data[name] = new { state = t.State.ToString(), pending = t.Pending, degradedAt = t.DegradedQueueLength, capacity = t.Options.QueueCapacity };
            switch (t.State)
            {
                case TranslatorState.Loading: loading.Add(name); break;
                case TranslatorState.Failed: failed.Add(name); break;
                default:
                    if (t.Pending > t.DegradedQueueLength) busy.Add(name);
                    break;
            }
        }
        HealthCheckResult result;
        if (provider.Names.Count == 0) result = HealthCheckResult.Unhealthy("No translator is registered.", data: data);
        else if (failed.Count > 0) result = HealthCheckResult.Unhealthy($"Failed to load: {string.Join(", ", failed)}.", provider.Get(failed[0]).LoadError, data);
        else if (loading.Count > 0) result = HealthCheckResult.Unhealthy($"Loading: {string.Join(", ", loading)}.", data: data);
        else if (busy.Count > 0) result = HealthCheckResult.Degraded($"Queue over threshold: {string.Join(", ", busy)}.", data: data);
        else result = HealthCheckResult.Healthy("All translators loaded.", data);
        return Task.FromResult(result);
    }
}
