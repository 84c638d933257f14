using System.Text.Json;
using TorchSharp;
using TransformerInference.Loading;
using TransformerInference.Modeling;
using Xunit;

namespace TransformerInference.Tests;

/// <summary>The BART-family hf-tiny folders run in Float64 against an independent float64 implementation of the
/// Hugging Face graphs (Fixtures/hf-tiny-f64/make_reference.py, written from the transformers modeling source).
/// The hf-tiny fixtures are float32 results: two float32 implementations that sum in different orders differ by up
/// to ~1.3e-4 on marian-separate and m2m100-asym, so a float32 comparison cannot tell a formula error of that size
/// from rounding. In float64 the rounding is ~1e-13 and every formula (positions, scales, norms, attention, the
/// lm_head ties, final_logits_bias, asymmetric stacks, separate vocabularies) is checked far below it, on the
/// uncached decoder, the KV-cached steps and the greedy path's step scores (teacher-forced over its ids).</summary>
public class HuggingFaceFloat64Tests
{
    public static TheoryData<string> Families() => new() { "marian", "marian-separate", "m2m100", "m2m100-asym", "nllb", "mbart" };

    /// <summary>1e-10, except where the positions are the fairseq sinusoid table: Hugging Face builds that table in
    /// float32 (so do we), and sin/cos of PyTorch 1.13 (the reference) and of our LibTorch differ by an ulp on some
    /// entries, which moves the float64 logits by up to 7.1e-6 (m2m100 greedy step scores; teacher-forced logits stay
    /// under 4e-6). Marian, marian-separate and mBART agree to under 1e-11.</summary>
    private static double Tolerance(string family) => family is "m2m100" or "m2m100-asym" or "nllb" ? 2e-5 : 1e-10;

    private static TransformerModel LoadFloat64(string family) =>
        ModelLoader.Load(Fixtures.Path_("hf-tiny", family), new ModelLoadOptions { DType = torch.ScalarType.Float64 });

    private static (JsonElement Case, JsonElement Reference)[] Cases(string family) =>
        Fixtures.Json("hf-tiny", family, "expected.json").GetProperty("translation").EnumerateArray()
            .Zip(Fixtures.Json("hf-tiny-f64", family + ".json").GetProperty("translation").EnumerateArray())
            .ToArray();

    private static double[] Doubles(JsonElement e) => e.EnumerateArray().Select(x => x.GetDouble()).ToArray();

    [Theory, MemberData(nameof(Families))]
    public void TeacherForcedLogitsMatchUncachedAndCached(string family)
    {
        using var model = LoadFloat64(family);
        foreach (var (c, reference) in Cases(family))
        {
            var name = c.GetProperty("name").GetString()!;
            Assert.Equal(name, reference.GetProperty("name").GetString());
            var rows = reference.GetProperty("teacher_forced_logits").EnumerateArray().Select(Doubles).ToArray();
            var source = c.GetProperty("input_ids").Ints();
            var prefix = c.GetProperty("teacher_forcing").GetProperty("decoder_input_ids").Ints();
            var uncached = Fixtures.TeacherForced64(model, source, prefix);
            using var noGrad = torch.no_grad();
            using var scope = torch.NewDisposeScope();
            using var cache = model.Start(torch.tensor(source.Select(i => (long)i).ToArray(), new long[] { 1, source.Length }), rows.Length);
            for (var p = 0; p < rows.Length; p++)
            {
                Fixtures.AssertClose(rows[p], uncached[p], Tolerance(family), $"{name} position {p}");
                // Step hands the search float32 scores (whatever the model's dtype): rounding them adds half a float32
                // ulp of logits under 10, at most 4.8e-7.
                var step = model.Step(torch.tensor(new long[] { prefix[p] }, new long[] { 1, 1 }), cache)[0]
                    .to(torch.ScalarType.Float64).data<double>().ToArray();
                Fixtures.AssertClose(rows[p], step, Tolerance(family) + 5e-7, $"{name} cached position {p}");
            }
        }
    }

    [Theory, MemberData(nameof(Families))]
    public void GreedyPathStepScoresMatch(string family)
    {
        using var model = LoadFloat64(family);
        foreach (var (c, reference) in Cases(family))
        {
            var ids = c.GetProperty("ids").Ints();
            var scores = Fixtures.TeacherForced64(model, c.GetProperty("input_ids").Ints(), ids[..^1]);
            var steps = reference.GetProperty("step_top2").EnumerateArray().ToArray();
            Assert.Equal(ids.Length - 1, steps.Length);
            Assert.Contains(steps, s => s.ValueKind != JsonValueKind.Null);
            for (var s = 0; s < steps.Length; s++)
            {
                if (steps[s].ValueKind == JsonValueKind.Null) continue;
                var top = Doubles(steps[s]);
                for (var j = 0; j < 4; j += 2)
                {
                    var difference = Math.Abs(top[j + 1] - scores[s][(int)top[j]]);
                    Assert.True(difference <= Tolerance(family), $"{c.GetProperty("name")} step {s} id {top[j]}: {difference:E3}");
                }
            }
        }
    }
}
