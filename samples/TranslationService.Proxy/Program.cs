using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.LoadBalancing;

// A YARP load balancer in front of several translation service instances (the load script's scale-out run):
//   dotnet run --project samples/TranslationService.Proxy -- --urls http://127.0.0.1:5080 \
//       --Backends http://127.0.0.1:5081,http://127.0.0.1:5082
// Least-requests balancing; an instance whose /healthz fails (model still loading) gets no traffic.
var builder = WebApplication.CreateBuilder(args);
var backends = (builder.Configuration["Backends"] ?? "http://127.0.0.1:5081,http://127.0.0.1:5082")
    .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
if (backends.Length == 0) throw new ArgumentException("Backends names no service instance.");

var routes = new[]
{
    new RouteConfig { RouteId = "translation", ClusterId = "translators", Match = new RouteMatch { Path = "{**rest}" } },
};
var clusters = new[]
{
    new ClusterConfig
    {
        ClusterId = "translators",
        LoadBalancingPolicy = LoadBalancingPolicies.LeastRequests,
        Destinations = backends.Select((address, i) => (Key: $"instance{i + 1}", Value: new DestinationConfig { Address = address }))
            .ToDictionary(d => d.Key, d => d.Value),
        HealthCheck = new HealthCheckConfig
        {
            Active = new ActiveHealthCheckConfig { Enabled = true, Interval = TimeSpan.FromSeconds(2), Timeout = TimeSpan.FromSeconds(2), Path = "/healthz" },
        },
    },
};
builder.Services.AddReverseProxy().LoadFromMemory(routes, clusters);

var app = builder.Build();
app.MapReverseProxy();
app.Run();
