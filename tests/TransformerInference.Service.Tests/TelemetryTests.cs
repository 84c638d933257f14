using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Net;
using System.Text;

namespace TransformerInference.Service.Tests;

/// <summary>The library's meter and activity source record what a request did.</summary>
[Collection(ServiceGroup.Name)]
public sealed class TelemetryTests(ServiceFactory factory)
{
    [Fact]
    public async Task A_request_records_metrics_and_a_span()
    {
        const string text = "I love you so much";
        var measurements = new ConcurrentBag<(string Instrument, double Value, Dictionary<string, object?> Tags)>();
        using var meters = new MeterListener();
        meters.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == TranslatorDiagnostics.Name) listener.EnableMeasurementEvents(instrument);
        };
        void Record<T>(Instrument instrument, T value, ReadOnlySpan<KeyValuePair<string, object?>> tags, object? state) =>
            measurements.Add((instrument.Name, Convert.ToDouble(value), new Dictionary<string, object?>(tags.ToArray())));
        meters.SetMeasurementEventCallback<long>(Record);
        meters.SetMeasurementEventCallback<double>(Record);
        meters.Start();

        var spans = new ConcurrentBag<Activity>();
        using var activities = new ActivityListener
        {
            ShouldListenTo = source => source.Name == TranslatorDiagnostics.Name,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = spans.Add,
        };
        ActivitySource.AddActivityListener(activities);

        using var client = factory.CreateClient();
        using var response = await client.PostAsync("/v1/translate",
            new StringContent("""{"texts":["I love you so much","I love you"],"options":{"search":"greedy"}}""", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var bad = await client.PostAsync("/v1/translate",
            new StringContent("{\"text\":\"" + string.Join(" ", Enumerable.Repeat("love", 400)) + "\"}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        meters.RecordObservableInstruments();

        var demo = measurements.Where(m => Equals(m.Tags.GetValueOrDefault("model"), "demo")).ToList();
        double Sum(string name) => demo.Where(m => m.Instrument == name).Sum(m => m.Value);
        Assert.True(Sum("transformer_inference.requests") >= 2);
        Assert.True(Sum("transformer_inference.input_tokens") >= 2 * 3);
        var expectedTokens = factory.Demo.Translator.TranslateDetailed(new[] { text }).Single().Ids.Count;
        Assert.True(Sum("transformer_inference.output_tokens") >= expectedTokens);
        Assert.Contains(demo, m => m.Instrument == "transformer_inference.batch.size" && m.Value == 2);
        Assert.Contains(demo, m => m.Instrument == "transformer_inference.prefill.duration" && m.Value > 0);
        Assert.Contains(demo, m => m.Instrument == "transformer_inference.decode.token_duration" && m.Value > 0);
        Assert.Contains(demo, m => m.Instrument == "transformer_inference.queue.length" && m.Value == 1);
        Assert.Contains(demo, m => m.Instrument == "transformer_inference.errors" && Equals(m.Tags["error.type"], nameof(ArgumentException)));

        var span = Assert.Single(spans, s => s.OperationName == "translate" && Equals(s.GetTagItem("batch.size"), 2)
            && Equals(s.GetTagItem("model"), "demo"));
        Assert.Equal(1, span.GetTagItem("search.beam_size"));
        Assert.Equal(false, span.GetTagItem("search.sample"));
        Assert.True((long)span.GetTagItem("tokens.output")! >= expectedTokens);
        Assert.True((long)span.GetTagItem("tokens.input")! > 0);
        Assert.Contains(spans, s => s.Status == ActivityStatusCode.Error && Equals(s.GetTagItem("error.type"), nameof(ArgumentException)));
    }
}
