using System.Text.Json;
using TransformerInference.Decoding;
using TransformerInference.Loading;
using TransformerInference.Modeling;
using Xunit;
using Xunit.Abstractions;

namespace TransformerInference.Tests;

/// <summary>Quality of int8 weights against float32 on the trained fixtures (seed-tiny is also the sample's demo
/// model): greedy ids and teacher-forced scores.</summary>
public class QuantizationTests
{
    private readonly ITestOutputHelper _output;

    public QuantizationTests(ITestOutputHelper output) => _output = output;

    /// <summary>Largest teacher-forced score difference allowed (scores are logits for seed-tiny, log-probabilities
    /// for thinam-tiny); measured 0.12 and 0.05 (40/40 and 39/40 sentences with equal ids).</summary>
    private const double ScoreBound = 0.2;

    /// <summary>The same for bfloat16 weights; measured 0.020 and 0.022, every sentence's ids equal.</summary>
    private const double BFloat16ScoreBound = 0.05;

    public static TheoryData<string, WeightQuantization> Cases => new()
    {
        { "seed-tiny", WeightQuantization.Int8 }, { "thinam-tiny", WeightQuantization.Int8 },
        { "seed-tiny", WeightQuantization.BFloat16 }, { "thinam-tiny", WeightQuantization.BFloat16 },
    };

    [Theory, MemberData(nameof(Cases))]
    public void QuantizedWeightsKeepTheGreedyIdsOfFloat32AndScoresCloseToThem(string fixture, WeightQuantization quantization)
    {
        var heads = Fixtures.Json(fixture, "model_args.json").GetProperty("h").GetInt32();
        var path = Fixtures.Path_(fixture, "tmodel.pt");
        using var float32 = ModelLoader.LoadSeedCheckpoint(path, new ModelLoadOptions { Heads = heads });
        using var int8 = ModelLoader.LoadSeedCheckpoint(path, new ModelLoadOptions { Heads = heads, Quantization = quantization });
        var sources = Fixtures.Json(fixture, "expected.json").GetProperty("sentences").EnumerateArray()
            .Where(s => s.GetProperty("output_ids").ValueKind == JsonValueKind.Array)
            .Select(s => new[] { float32.SosId }.Concat(s.GetProperty("src_ids").Ints()).Append(float32.EosId).ToArray())
            .ToList();
        var expected = Generator.Generate(float32, sources.Cast<IReadOnlyList<int>>().ToList());
        var actual = Generator.Generate(int8, sources.Cast<IReadOnlyList<int>>().ToList());
        var same = Enumerable.Range(0, sources.Count).Count(i => expected[i][0].Ids.SequenceEqual(actual[i][0].Ids));

        var worst = 0.0;
        for (var i = 0; i < sources.Count; i++)
        {
            var prefix = new[] { float32.SosId }.Concat(expected[i][0].Ids).ToArray();
            var a = Fixtures.TeacherForced(float32, sources[i], prefix);
            var b = Fixtures.TeacherForced(int8, sources[i], prefix);
            for (var p = 0; p < a.Length; p++)
                worst = Math.Max(worst, a[p].Zip(b[p], (x, y) => Math.Abs(x - y)).Max());
        }
        _output.WriteLine($"{fixture}: {quantization} greedy ids equal float32 on {same}/{sources.Count}; largest teacher-forced score difference {worst:F4}");
        Assert.True(same >= 0.95 * sources.Count, $"{fixture}: only {same}/{sources.Count} sentences keep their float32 ids");
        Assert.InRange(worst, 1e-6, quantization == WeightQuantization.Int8 ? ScoreBound : BFloat16ScoreBound); // above zero: the weights really are quantized
    }
}
