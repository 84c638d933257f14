using System.Text.Json;
using TorchSharp;
using TransformerInference.Decoding;
using TransformerInference.Loading;
using TransformerInference.Modeling;
using Xunit;

namespace TransformerInference.Tests;

/// <summary>Parity with the architecture-variant fixtures: parallel blocks, GQA/MQA, RMSNorm, rotary, SwiGLU, tying.</summary>
public class VariantParityTests
{
    public static TheoryData<string> Names()
    {
        var data = new TheoryData<string>();
        foreach (var n in Fixtures.VariantNames) data.Add(n);
        return data;
    }

    private static TransformerModel Load(string name, bool fuse = true) =>
        ModelLoader.LoadFolder(Fixtures.Path_("variants", name), new ModelLoadOptions { FuseParallel = fuse });

    private static JsonElement[] Cases(string name) =>
        Fixtures.Json("variants", name, "expected.json").GetProperty("cases").EnumerateArray().ToArray();

    private static float[] TeacherForcedLogits(TransformerModel model, int[] src, int[] prefix) =>
        Fixtures.TeacherForced(model, src, prefix).SelectMany(row => row).ToArray();

    [Theory, MemberData(nameof(Names))]
    public void LogitsAndEncoderOutputMatch(string name)
    {
        using var model = Load(name);
        foreach (var c in Cases(name))
        {
            var src = c.GetProperty("src_ids").Ints();
            var expected = c.GetProperty("logits").EnumerateArray().SelectMany(r => r.Floats()).ToArray();
            Fixtures.AssertClose(expected, TeacherForcedLogits(model, src, c.GetProperty("tgt_prefix").Ints()), 1e-4, $"{name} case {c.GetProperty("case")}");

            using var noGrad = torch.no_grad();
            using var scope = torch.NewDisposeScope();
            var s = torch.tensor(src.Select(i => (long)i).ToArray(), new long[] { 1, src.Length });
            var memory = model.Encode(s, Masks.SourceKeyMask(s, model.PadId));
            Fixtures.AssertClose(c.GetProperty("memory_row0").Floats(), memory[0, 0].data<float>().ToArray(), 1e-4, $"{name} memory row 0");
        }
    }

    [Theory, MemberData(nameof(Names))]
    public void GreedyIdsMatchWithAndWithoutCacheAndInOneBatch(string name)
    {
        using var model = Load(name);
        var cases = Cases(name);
        var maxNew = Fixtures.Json("variants", name, "expected.json").GetProperty("max_new_tokens").GetInt32();
        var sources = cases.Select(c => (IReadOnlyList<int>)c.GetProperty("src_ids").Ints()).ToList();
        var options = new DecodingOptions { MaxNewTokens = maxNew };
        var batched = Generator.Generate(model, sources, options);
        for (var i = 0; i < cases.Length; i++)
        {
            var expected = cases[i].GetProperty("ids").Ints();
            Assert.Equal(expected, Fixtures.NaiveGreedy(model, sources[i], maxNew));
            var alone = Generator.Generate(model, new[] { sources[i] }, options)[0][0];
            Assert.Equal(expected, Full(model, alone));
            Assert.Equal(expected, Full(model, batched[i][0]));
            Assert.Equal(cases[i].GetProperty("stopped_at_eos").GetBoolean(), alone.Finished);
        }
    }

    [Theory, MemberData(nameof(Names))]
    public void KvCacheHoldsKvHeadsOnlyWithTheReferenceShapes(string name)
    {
        using var model = Load(name);
        var config = Fixtures.Json("variants", name, "config.json");
        var kvHeads = config.GetProperty("kv_heads").GetInt32();
        var headDim = config.GetProperty("head_dim").GetInt32();
        foreach (var c in Cases(name).Take(3))
        {
            var src = c.GetProperty("src_ids").Ints();
            var ids = c.GetProperty("ids").Ints();
            using var noGrad = torch.inference_mode();
            using var scope = torch.NewDisposeScope();
            using var cache = model.Start(torch.tensor(src.Select(i => (long)i).ToArray(), new long[] { 1, src.Length }), 20);
            foreach (var token in ids.Take(ids.Length - 1))
                model.Step(torch.tensor(new long[] { token }, new long[] { 1, 1 }), cache);
            var shapes = c.GetProperty("kv_cache").EnumerateArray().ToArray();
            for (var layer = 0; layer < shapes.Length; layer++)
            {
                var actual = cache.LayerShapes(layer);
                var names = new[] { "self_k", "self_v", "cross_k", "cross_v" };
                for (var j = 0; j < 4; j++)
                    Assert.Equal(shapes[layer].GetProperty(names[j]).EnumerateArray().Select(x => x.GetInt64()), actual[j]);
            }
            // Bytes: 2 (k, v) × layers × kv_heads × head_dim × (capacity 20 + source length) × 4 bytes.
            var layers = config.GetProperty("decoder_layers").GetInt32();
            Assert.Equal(2L * layers * kvHeads * headDim * (20 + src.Length) * 4, cache.Bytes);
        }
    }

    [Fact]
    public void FusedParallelBlockEqualsUnfused()
    {
        foreach (var name in Fixtures.VariantNames.Where(n => n.StartsWith("parallel")))
        {
            using var fused = Load(name, fuse: true);
            using var plain = Load(name, fuse: false);
            foreach (var c in Cases(name))
            {
                var src = c.GetProperty("src_ids").Ints();
                var prefix = c.GetProperty("ids").Ints();
                Fixtures.AssertClose(TeacherForcedLogits(plain, src, prefix), TeacherForcedLogits(fused, src, prefix), 2e-5, $"{name} fused vs unfused");
            }
        }
    }

    internal static int[] Full(ISeq2SeqModel model, Hypothesis h) =>
        new[] { model.SosId }.Concat(h.Ids).Concat(h.Finished ? new[] { model.EosId } : Array.Empty<int>()).ToArray();
}
