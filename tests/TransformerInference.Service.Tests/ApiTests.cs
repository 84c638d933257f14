using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using TransformerInference.Decoding;

namespace TransformerInference.Service.Tests;

[Collection(ServiceGroup.Name)]
public sealed class ApiTests(ServiceFactory factory)
{
    private readonly HttpClient _client = factory.CreateClient();

    private static StringContent Body(string json) => new(json, Encoding.UTF8, "application/json");

    private static async Task<JsonElement> JsonOf(HttpResponseMessage response)
    {
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return doc.RootElement.Clone();
    }

    [Fact]
    public async Task Translate_gives_the_reference_sentence()
    {
        using var response = await _client.PostAsync("/v1/translate", Body($$"""{"text":"{{ServiceFactory.English}}"}"""));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var json = await JsonOf(response);
        Assert.Equal("demo", json.GetProperty("model").GetString());
        var only = Assert.Single(json.GetProperty("translations").EnumerateArray());
        Assert.Equal(ServiceFactory.Nepali, only.GetProperty("text").GetString());
        Assert.True(only.GetProperty("score").GetDouble() < 0, "the score is a log-probability");
    }

    [Fact]
    public async Task Translate_many_keeps_order_and_matches_the_library()
    {
        var texts = new[] { "I love you", "", ServiceFactory.English, "how are you" };
        using var response = await _client.PostAsJsonAsync("/v1/translate", new { texts, model = "demo" });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var got = (await JsonOf(response)).GetProperty("translations").EnumerateArray().Select(t => t.GetProperty("text").GetString()).ToArray();
        var expected = texts.Select(t => factory.Demo.Translator.Translate(t)).ToArray();
        Assert.Equal(expected, got);
        Assert.Equal(ServiceFactory.Nepali, got[2]);
        Assert.Equal("", got[1]);
    }

    [Theory]
    [InlineData("""{"search":"beam","beamSize":3}""", 3, false)]
    [InlineData("""{"search":"sample","temperature":0.7,"topK":5,"seed":11}""", 1, true)]
    [InlineData("""{"search":"greedy","maxNewTokens":3}""", 1, false)]
    public async Task Search_options_reach_the_search(string options, int beam, bool sample)
    {
        using var response = await _client.PostAsync("/v1/translate", Body($$"""{"text":"{{ServiceFactory.English}}","options":{{options}}}"""));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var text = (await JsonOf(response)).GetProperty("translations")[0].GetProperty("text").GetString();
        using var doc = JsonDocument.Parse(options);
        var o = doc.RootElement;
        var decoding = new DecodingOptions
        {
            BeamSize = beam,
            Sample = sample,
            Temperature = o.TryGetProperty("temperature", out var t) ? t.GetDouble() : 1.0,
            TopK = o.TryGetProperty("topK", out var k) ? k.GetInt32() : 0,
            Seed = o.TryGetProperty("seed", out var s) ? s.GetInt32() : null,
            MaxNewTokens = o.TryGetProperty("maxNewTokens", out var m) ? m.GetInt32() : null,
        };
        Assert.Equal(factory.Demo.Translator.Translate(ServiceFactory.English, decoding), text);
    }

    [Fact]
    public async Task Stream_sends_pieces_that_join_to_the_translation_then_done()
    {
        using var response = await _client.PostAsync("/v1/translate/stream", Body($$"""{"text":"{{ServiceFactory.English}}"}"""));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var events = Sse.Parse(await response.Content.ReadAsStringAsync());
        var pieces = events.Where(e => e.Name == "message").Select(e => e.Data.GetProperty("text").GetString()).ToArray();
        Assert.True(pieces.Length > 1, "the translation arrives in several pieces");
        Assert.Equal(ServiceFactory.Nepali, string.Concat(pieces));
        var done = events[^1];
        Assert.Equal("done", done.Name);
        Assert.Equal(pieces.Length, done.Data.GetProperty("pieces").GetInt32());
    }

    [Fact]
    public async Task Models_lists_the_loaded_demo_model()
    {
        var json = await _client.GetFromJsonAsync<JsonElement>("/v1/models");
        var model = Assert.Single(json.GetProperty("models").EnumerateArray());
        Assert.Equal("demo", model.GetProperty("name").GetString());
        Assert.True(model.GetProperty("default").GetBoolean());
        Assert.Equal("Ready", model.GetProperty("state").GetString());
        var info = model.GetProperty("info");
        Assert.Equal(factory.Demo.Translator.Model.Config.EncoderLayers, info.GetProperty("encoderLayers").GetInt32());
        Assert.Equal("seed", info.GetProperty("family").GetString());
    }

    [Fact]
    public async Task Health_is_healthy_once_loaded()
    {
        using var response = await _client.GetAsync("/healthz");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var json = await JsonOf(response);
        Assert.Equal("Healthy", json.GetProperty("status").GetString());
        Assert.Equal("Ready", json.GetProperty("checks").GetProperty("translators").GetProperty("data").GetProperty("demo").GetProperty("state").GetString());
    }

    [Fact]
    public async Task Metrics_endpoint_exports_the_library_meter()
    {
        using (var r = await _client.PostAsync("/v1/translate", Body("""{"text":"I love you"}"""))) Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var text = "";
        // The Prometheus exporter caches a scrape briefly; a fresh one includes the call above.
        for (var i = 0; i < 50 && !text.Contains("transformer_inference_output_tokens", StringComparison.Ordinal); i++)
        {
            if (i > 0) await Task.Delay(100);
            text = await _client.GetStringAsync("/metrics");
        }
        Assert.Contains("transformer_inference_requests", text, StringComparison.Ordinal);
        Assert.Contains("transformer_inference_output_tokens", text, StringComparison.Ordinal);
        Assert.Contains("transformer_inference_prefill_duration", text, StringComparison.Ordinal);
        Assert.Contains("model=\"demo\"", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task OpenApi_document_describes_the_endpoints()
    {
        var json = await _client.GetFromJsonAsync<JsonElement>("/openapi/v1.json");
        var paths = json.GetProperty("paths");
        Assert.True(paths.TryGetProperty("/v1/translate", out _));
        Assert.True(paths.TryGetProperty("/v1/translate/stream", out _));
        Assert.True(paths.TryGetProperty("/v1/models", out _));
    }

    [Fact]
    public async Task Page_is_served_at_the_root()
    {
        var html = await _client.GetStringAsync("/");
        Assert.Contains("/v1/translate/stream", html, StringComparison.Ordinal);
    }

    public static TheoryData<string, string, HttpStatusCode> BadRequests => new()
    {
        { "/v1/translate", "{not json", HttpStatusCode.BadRequest },
        { "/v1/translate", "null", HttpStatusCode.BadRequest },
        { "/v1/translate", "{}", HttpStatusCode.BadRequest },
        { "/v1/translate", """{"text":"a","texts":["b"]}""", HttpStatusCode.BadRequest },
        { "/v1/translate", """{"texts":[]}""", HttpStatusCode.BadRequest },
        { "/v1/translate", """{"texts":["a",null]}""", HttpStatusCode.BadRequest },
        { "/v1/translate", """{"text":42}""", HttpStatusCode.BadRequest },
        { "/v1/translate", "{\"texts\":[" + string.Join(",", Enumerable.Repeat("\"a\"", 33)) + "]}", HttpStatusCode.BadRequest },
        { "/v1/translate", "{\"text\":\"" + new string('a', 2001) + "\"}", HttpStatusCode.BadRequest },
        { "/v1/translate", "{\"text\":\"" + string.Join(" ", Enumerable.Repeat("love", 400)) + "\"}", HttpStatusCode.BadRequest },
        { "/v1/translate", """{"text":"a","model":"nope"}""", HttpStatusCode.BadRequest },
        { "/v1/translate", """{"text":"a","options":{"search":"magic"}}""", HttpStatusCode.BadRequest },
        { "/v1/translate", """{"text":"a","options":{"search":"beam","beamSize":100}}""", HttpStatusCode.BadRequest },
        { "/v1/translate", """{"text":"a","options":{"beamSize":0,"search":"beam"}}""", HttpStatusCode.BadRequest },
        { "/v1/translate", """{"text":"a","options":{"maxNewTokens":100000}}""", HttpStatusCode.BadRequest },
        { "/v1/translate", """{"text":"a","options":{"temperature":0.5}}""", HttpStatusCode.BadRequest },
        { "/v1/translate", """{"text":"a","options":{"search":"sample","temperature":-1}}""", HttpStatusCode.BadRequest },
        { "/v1/translate", """{"text":"a","options":{"search":"sample","topP":7}}""", HttpStatusCode.BadRequest },
        { "/v1/translate/stream", """{"texts":["a"]}""", HttpStatusCode.BadRequest },
        { "/v1/translate/stream", """{"text":"a","options":{"search":"beam","beamSize":-2}}""", HttpStatusCode.BadRequest },
        { "/v1/translate/stream", "{\"text\":\"" + string.Join(" ", Enumerable.Repeat("love", 400)) + "\"}", HttpStatusCode.BadRequest },
    };

    [Theory]
    [MemberData(nameof(BadRequests))]
    public async Task Bad_requests_are_problem_details_never_500(string path, string body, HttpStatusCode expected)
    {
        using var response = await _client.PostAsync(path, Body(body));
        Assert.Equal(expected, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = await JsonOf(response);
        Assert.Equal((int)expected, problem.GetProperty("status").GetInt32());
        Assert.False(string.IsNullOrEmpty(problem.GetProperty("title").GetString()));
    }

    [Fact]
    public async Task Wrong_media_type_and_oversized_bodies_are_refused_with_problem_details()
    {
        using (var response = await _client.PostAsync("/v1/translate", new StringContent("text=hi", Encoding.UTF8, "text/plain")))
        {
            Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        }
        using (var response = await _client.PostAsync("/v1/translate", Body("{\"text\":\"" + new string('a', 70_000) + "\"}")))
        {
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        }
    }

    [Fact]
    public async Task A_full_queue_answers_429_with_retry_after()
    {
        var demo = factory.Demo;
        // Take every admission slot, as that many concurrent calls would.
        var held = new List<IDisposable>();
        try
        {
            while (demo.Pending < demo.Options.QueueCapacity) held.Add(demo.Admit());
            foreach (var path in new[] { "/v1/translate", "/v1/translate/stream" })
            {
                using var response = await _client.PostAsync(path, Body("""{"text":"I love you"}"""));
                Assert.Equal(HttpStatusCode.TooManyRequests, response.StatusCode);
                Assert.Equal(TimeSpan.FromSeconds(demo.Options.RetryAfterSeconds), response.Headers.RetryAfter?.Delta);
                Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
            }
            var health = await JsonOf(await _client.GetAsync("/healthz"));
            Assert.Equal("Degraded", health.GetProperty("status").GetString());
        }
        finally
        {
            foreach (var h in held) h.Dispose();
        }
        using var after = await _client.PostAsync("/v1/translate", Body("""{"text":"I love you"}"""));
        Assert.Equal(HttpStatusCode.OK, after.StatusCode);
    }

    [Fact]
    public async Task A_client_that_leaves_a_stream_frees_its_slot()
    {
        using var cts = new CancellationTokenSource();
        using (var request = new HttpRequestMessage(HttpMethod.Post, "/v1/translate/stream")
               { Content = Body("""{"text":"I love you so much","options":{"search":"sample","temperature":1.5,"seed":3}}""") })
        using (var response = await _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cts.Token));
            Assert.StartsWith("data: ", await reader.ReadLineAsync(cts.Token));
            cts.Cancel(); // the client goes away after the first piece
        }
        for (var i = 0; i < 100 && factory.Demo.Pending > 0; i++) await Task.Delay(50);
        Assert.Equal(0, factory.Demo.Pending);
        using var after = await _client.PostAsync("/v1/translate", Body($$"""{"text":"{{ServiceFactory.English}}"}"""));
        Assert.Equal(ServiceFactory.Nepali, (await JsonOf(after)).GetProperty("translations")[0].GetProperty("text").GetString());
    }
}

/// <summary>A server-sent events parser for the tests: event name (default <c>message</c>) and JSON data.</summary>
internal static class Sse
{
    public static List<(string Name, JsonElement Data)> Parse(string body) =>
        body.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(block =>
        {
            var lines = block.Split('\n');
            var name = lines.FirstOrDefault(l => l.StartsWith("event: ", StringComparison.Ordinal))?["event: ".Length..] ?? "message";
            var data = lines.First(l => l.StartsWith("data: ", StringComparison.Ordinal))["data: ".Length..];
            using var doc = JsonDocument.Parse(data);
            return (name, doc.RootElement.Clone());
        }).ToList();
}
