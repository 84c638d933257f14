using System.Text.Json;
using TorchSharp;
using TransformerInference.Decoding;
using TransformerInference.Loading;
using TransformerInference.Modeling;
using Xunit;

namespace TransformerInference.Tests;

/// <summary>Parity with the PyTorch reference on the two seed fixtures (one per checkpoint naming scheme).</summary>
public class SeedParityTests
{
    public static TheoryData<string> FixtureNames => new() { "seed-tiny", "thinam-tiny" };

    internal static TransformerModel Load(string fixture, bool fuse = true)
    {
        var args = Fixtures.Json(fixture, "model_args.json");
        return ModelLoader.LoadSeedCheckpoint(Fixtures.Path_(fixture, "tmodel.pt"),
            new ModelLoadOptions { Heads = args.GetProperty("h").GetInt32(), FuseParallel = fuse });
    }

    private static IEnumerable<JsonElement> Sentences(string fixture) =>
        Fixtures.Json(fixture, "expected.json").GetProperty("sentences").EnumerateArray();

    [Theory, MemberData(nameof(FixtureNames))]
    public void InfersTheArchitectureFromTensorShapes(string fixture)
    {
        using var model = Load(fixture);
        var args = Fixtures.Json(fixture, "model_args.json");
        var c = model.Config;
        Assert.Equal(args.GetProperty("d_model").GetInt32(), c.DModel);
        Assert.Equal(args.GetProperty("N").GetInt32(), c.EncoderLayers);
        Assert.Equal(args.GetProperty("N").GetInt32(), c.DecoderLayers);
        Assert.Equal(args.GetProperty("d_ff").GetInt32(), c.DFF);
        Assert.Equal(args.GetProperty("src_vocab_size").GetInt32(), c.SourceVocabSize);
        Assert.Equal(args.GetProperty("tgt_vocab_size").GetInt32(), c.TargetVocabSize);
        Assert.Equal(args.GetProperty("src_seq_len").GetInt32(), c.MaxSourcePositions);
        Assert.Equal(args.GetProperty("tgt_seq_len").GetInt32(), c.MaxTargetPositions);
        var author = fixture == "thinam-tiny";
        Assert.Equal(author, c.AttentionBias);
        Assert.Equal(author, c.OutputLogSoftmax);
    }

    [Theory, MemberData(nameof(FixtureNames))]
    public void StepLogitsAndEncoderOutputMatchTheReference(string fixture)
    {
        using var model = Load(fixture);
        using var noGrad = torch.no_grad();
        foreach (var s in Sentences(fixture).Where(s => s.TryGetProperty("step_logits", out _)))
        {
            using var scope = torch.NewDisposeScope();
            var ids = new List<long> { model.SosId };
            ids.AddRange(s.GetProperty("src_ids").Ints().Select(i => (long)i));
            ids.Add(model.EosId);
            while (ids.Count < model.MaxSourceLength) ids.Add(model.PadId); // the reference pads to src_seq_len
            var src = torch.tensor(ids.ToArray(), new long[] { 1, ids.Count });
            var mask = Masks.SourceKeyMask(src, model.PadId);
            var memory = model.Encode(src, mask);
            var l2 = memory.norm().item<float>();
            Assert.InRange(l2, s.GetProperty("encoder_output_l2").GetSingle() - 1e-3, s.GetProperty("encoder_output_l2").GetSingle() + 1e-3);

            var output = s.GetProperty("output_ids").Ints();
            var steps = s.GetProperty("step_logits").EnumerateArray().ToArray();
            for (var step = 0; step < steps.Length; step++)
            {
                var prefix = output.Take(step + 1).Select(i => (long)i).ToArray();
                var tgt = torch.tensor(prefix, new long[] { 1, prefix.Length });
                var logits = model.Project(model.Decode(memory, mask, tgt, Masks.Causal(prefix.Length)).select(1, prefix.Length - 1));
                Fixtures.AssertClose(steps[step].Floats(), logits.squeeze(0).data<float>().ToArray(), 1e-4, $"{fixture} '{s.GetProperty("src")}' step {step + 1}");
                Assert.Equal(s.GetProperty("step_argmax")[step].GetInt32(), (int)logits.argmax().item<long>());
            }
        }
    }

    [Theory, MemberData(nameof(FixtureNames))]
    public void GreedyIdsMatchForEverySentenceWithAndWithoutCache(string fixture)
    {
        using var model = Load(fixture);
        var sentences = Sentences(fixture).Where(s => s.GetProperty("output_ids").ValueKind == JsonValueKind.Array).ToList();
        Assert.True(sentences.Count >= 40);
        var sources = sentences.Select(s => (IReadOnlyList<int>)new[] { model.SosId }.Concat(s.GetProperty("src_ids").Ints()).Append(model.EosId).ToArray()).ToList();
        var cached = Generator.Generate(model, sources);
        for (var i = 0; i < sentences.Count; i++)
        {
            var expected = sentences[i].GetProperty("output_ids").Ints();
            // Naive loop on the reference's padded input, cached loop on the unpadded one: both must give the reference ids.
            Assert.Equal(expected, Fixtures.NaiveGreedy(model, sources[i], model.MaxTargetLength - 1, padTo: model.MaxSourceLength));
            var h = cached[i][0];
            var full = new[] { model.SosId }.Concat(h.Ids).Concat(h.Finished ? new[] { model.EosId } : Array.Empty<int>()).ToArray();
            Assert.Equal(expected, full);
        }
    }
}
