using System.Collections;
using TorchSharp;
using TorchSharp.PyBridge;
using TransformerInference.Decoding;
using TransformerInference.Loading;
using TransformerInference.Modeling;
using Xunit;

namespace TransformerInference.Tests;

/// <summary>
/// Nothing may depend on the fixtures' numbers: a seed checkpoint of other sizes (head count, unequal vocabularies
/// and lengths, unequal layer counts), written in both naming schemes, loads with every size inferred and decodes
/// the same way cached and uncached, and the two schemes agree.
/// </summary>
public class AnySeedCheckpointTests : IDisposable
{
    private const int D = 24, Heads = 3, DFF = 40, EncoderLayers = 3, DecoderLayers = 1, SrcVocab = 30, TgtVocab = 50, SrcLen = 20, TgtLen = 12;
    private readonly string _dir = Directory.CreateTempSubdirectory("ti-anyseed-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Random weights in the upstream naming; every norm holds one value repeated (so the author's
    /// scalar norms can express it).</summary>
    private static Dictionary<string, torch.Tensor> Upstream()
    {
        torch.manual_seed(7);
        var sd = new Dictionary<string, torch.Tensor>();
        void Add(string name, params long[] shape) => sd[name] = torch.randn(shape) * 0.3;
        void Norm(string prefix)
        {
            sd[prefix + ".alpha"] = torch.full(D, 1.0 + torch.rand(1).item<float>() * 0.5);
            sd[prefix + ".bias"] = torch.full(D, torch.rand(1).item<float>() * 0.1);
        }
        void Attention(string prefix)
        {
            foreach (var w in new[] { "w_q", "w_k", "w_v", "w_o" }) Add($"{prefix}.{w}.weight", D, D);
        }
        void Ffn(string prefix)
        {
            Add(prefix + ".linear_1.weight", DFF, D); Add(prefix + ".linear_1.bias", DFF);
            Add(prefix + ".linear_2.weight", D, DFF); Add(prefix + ".linear_2.bias", D);
        }
        for (var l = 0; l < EncoderLayers; l++)
        {
            Attention($"encoder.layers.{l}.self_attention_block");
            Ffn($"encoder.layers.{l}.feed_forward_block");
            for (var k = 0; k < 2; k++) Norm($"encoder.layers.{l}.residual_connections.{k}.norm");
        }
        for (var l = 0; l < DecoderLayers; l++)
        {
            Attention($"decoder.layers.{l}.self_attention_block");
            Attention($"decoder.layers.{l}.cross_attention_block");
            Ffn($"decoder.layers.{l}.feed_forward_block");
            for (var k = 0; k < 3; k++) Norm($"decoder.layers.{l}.residual_connections.{k}.norm");
        }
        Norm("encoder.norm");
        Norm("decoder.norm");
        Add("src_embed.embedding.weight", SrcVocab, D);
        Add("tgt_embed.embedding.weight", TgtVocab, D);
        sd["src_pos.pe"] = Sinusoidal(SrcLen);
        sd["tgt_pos.pe"] = Sinusoidal(TgtLen);
        Add("projection_layer.proj.weight", TgtVocab, D);
        Add("projection_layer.proj.bias", TgtVocab);
        return sd;
    }

    private static torch.Tensor Sinusoidal(int length)
    {
        var position = torch.arange(length, torch.float32).unsqueeze(1);
        var div = torch.exp(torch.arange(0, D, 2, torch.float32) * (-Math.Log(10000.0) / D));
        var pe = torch.zeros(length, D);
        pe[.., torch.TensorIndex.Slice(0, null, 2)] = torch.sin(position * div);
        pe[.., torch.TensorIndex.Slice(1, null, 2)] = torch.cos(position * div);
        return pe.unsqueeze(0);
    }

    /// <summary>The same weights in the seed author's naming: renamed, zero attention biases, scalar norms.</summary>
    private static Hashtable Author(Dictionary<string, torch.Tensor> upstream)
    {
        var sd = new Hashtable();
        foreach (var (name, t) in upstream)
        {
            var renamed = name.Replace(".residual_connections.", ".residual_connection1.")
                .Replace(".linear_1.", ".linear1.").Replace(".linear_2.", ".linear2.");
            if (renamed.StartsWith("encoder.", StringComparison.Ordinal)) renamed = renamed.Replace(".feed_forward_block.", ".feed_foward_block.");
            var isNorm = name.EndsWith(".alpha", StringComparison.Ordinal) || (name.Contains("norm") && name.EndsWith(".bias", StringComparison.Ordinal));
            sd[renamed] = isNorm ? t[..1].clone() : t;
            if (name.Contains("attention_block.w_")) sd[renamed.Replace(".weight", ".bias")] = torch.zeros(D);
        }
        return sd;
    }

    [Fact]
    public void BothSchemesLoadInferEverySizeAndAgree()
    {
        var upstream = Upstream();
        var plainPath = Path.Combine(_dir, "upstream.pt");
        PyTorchPickler.PickleStateDict(plainPath, new Hashtable(upstream));
        var authorPath = Path.Combine(_dir, "author.pt");
        // The author's train.py layout: a checkpoint dict with the state dict and optimizer state.
        PyTorchPickler.PickleStateDict(authorPath, new Hashtable
        {
            ["epoch"] = 3,
            ["global_step"] = 99,
            ["model_state_dict"] = Author(upstream),
            ["optimizer_state_dict"] = new Hashtable { ["state"] = new Hashtable(), ["param_groups"] = new ArrayList() },
        });

        var options = new ModelLoadOptions { Heads = Heads };
        using var a = ModelLoader.LoadSeedCheckpoint(plainPath, options);
        using var b = ModelLoader.LoadSeedCheckpoint(authorPath, options);
        foreach (var model in new[] { a, b })
        {
            var c = model.Config;
            Assert.Equal((D, DFF, EncoderLayers, DecoderLayers, SrcVocab, TgtVocab, SrcLen, TgtLen),
                (c.DModel, c.DFF, c.EncoderLayers, c.DecoderLayers, c.SourceVocabSize, c.TargetVocabSize, c.MaxSourcePositions, c.MaxTargetPositions));
        }
        Assert.False(a.Config.OutputLogSoftmax);
        Assert.True(b.Config.OutputLogSoftmax && b.Config.AttentionBias);

        var random = new Random(3);
        var sources = Enumerable.Range(0, 8).Select(i => (IReadOnlyList<int>)new[] { 2 }
            .Concat(Enumerable.Range(0, 1 + random.Next(SrcLen - 2)).Select(_ => 4 + random.Next(SrcVocab - 4))).Append(3).ToArray()).ToArray();
        var fromA = Generator.Generate(a, sources);
        var fromB = Generator.Generate(b, sources);
        for (var i = 0; i < sources.Length; i++)
        {
            var full = VariantParityTests.Full(a, fromA[i][0]);
            Assert.Equal(Fixtures.NaiveGreedy(a, sources[i], TgtLen - 1), full);
            Assert.Equal(full, VariantParityTests.Full(b, fromB[i][0]));
            Assert.Equal(fromA[i][0].LogProbability, fromB[i][0].LogProbability, 3);
        }
        Assert.Throws<ArgumentException>(() => Generator.Generate(a, new[] { (IReadOnlyList<int>)Enumerable.Repeat(5, SrcLen + 1).ToArray() }));
    }
}
