using TransformerInference.Decoding;
using TransformerInference.Loading;
using TransformerInference.Modeling;
using TransformerInference.Modeling.Kernels;
using Xunit;
using static TorchSharp.torch;

namespace TransformerInference.Tests;

/// <summary>The decode-step kernels (norms with the residual add before them, one-query attention over the cache
/// and over the encoder memory), each vector path forced on this machine (AVX-512 emulated where the CPU lacks it):
/// against LibTorch's ops (the path the same classes take without our kernels), against each other, row alone against
/// row in a batch, and the cases routed to LibTorch on purpose.</summary>
public class StepKernelTests
{
    private static readonly CpuKernel?[] Paths = { null, CpuKernel.Avx512, CpuKernel.Avx2, CpuKernel.Portable };

    private static float[] Floats(Tensor t) => t.contiguous().data<float>().ToArray();

    private static TransformerConfig Config(NormKind norm, int dModel, int heads = 8, int? kvHeads = null) => new()
    {
        SourceVocabSize = 16, TargetVocabSize = 16, DModel = dModel, DFF = 8, EncoderLayers = 1, DecoderLayers = 1,
        Heads = heads, KvHeads = kvHeads, MaxSourcePositions = 64, MaxTargetPositions = 64, Norm = norm, NormEps = 1e-5,
    };

    private static Norm MakeNorm(NormKind kind, int width, CpuKernel? kernel, Tensor weight, Tensor bias)
    {
        var tensors = new Dictionary<string, Tensor> { [kind == NormKind.Seed ? "n.alpha" : "n.weight"] = weight.clone() };
        if (kind != NormKind.RmsNorm) tensors["n.bias"] = bias.clone();
        using var w = new WeightSet(tensors, "test", CPU, ScalarType.Float32)
        {
            Kernels = kernel is null ? LinearKernels.LibTorch : new LinearKernels(kernel, PackedFormat.Float32),
        };
        var norm = new Norm(w, "n", Config(kind, width));
        w.Commit();
        return norm;
    }

    [Theory]
    [InlineData(NormKind.Seed, 37)] // odd width: vector bodies and scalar tails in every path
    [InlineData(NormKind.LayerNorm, 64)]
    [InlineData(NormKind.RmsNorm, 21)]
    public void NormPathsMatchLibTorchAndEachOther(NormKind kind, int width)
    {
        using var scope = NewDisposeScope();
        manual_seed(width);
        var weight = randn(width);
        var bias = randn(width);
        var x = randn(3, 5, width).mul(3).add(1.5); // a non-zero mean, as residual streams have
        var residual = randn(3, 5, width);
        var norms = Paths.Select(p => MakeNorm(kind, width, p, weight, bias)).ToArray();
        try
        {
            var plain = norms.Select(n => Floats(n.Forward(x))).ToArray();
            var added = norms.Select(n => n.AddForward(x, residual)).ToArray();
            var only = norms.Select(n => Floats(n.AddForwardNormOnly(x, residual))).ToArray();
            var sum = Floats(x + residual);
            for (var i = 1; i < Paths.Length; i++)
            {
                var path = Paths[i]!.Value;
                Fixtures.AssertClose(plain[0], plain[i], 1e-5, $"{kind} {path} against LibTorch");
                Fixtures.AssertClose(Floats(added[0].Normed), Floats(added[i].Normed), 1e-5, $"{kind} {path} add + norm against LibTorch");
                Assert.Equal(plain[1], plain[i]); // the vector width does not change a bit
                Assert.NotEqual(plain[0], plain[i]); // the kernel ran: its rounding differs from LibTorch's somewhere
                Assert.Equal(sum, Floats(added[i].Sum)); // the residual sum is LibTorch's add
                Assert.Equal(Floats(norms[i].Forward(added[i].Sum)), Floats(added[i].Normed));
                Assert.Equal(Floats(added[i].Normed), only[i]);
                // A row's result does not depend on the other rows.
                Assert.Equal(plain[i].Skip(7 * width).Take(width), Floats(norms[i].Forward(x.reshape(15, width)[7])));
            }
            // A non-contiguous input takes LibTorch's ops and gives the same values.
            var strided = x.transpose(0, 1);
            Fixtures.AssertClose(Floats(norms[0].Forward(strided)), Floats(norms[2].Forward(strided)), 1e-5, $"{kind} strided");
        }
        finally
        {
            foreach (var n in norms) n.Dispose();
        }
    }

    /// <summary>Cross-attention shaped: one query per row over S keys, boolean source masks (padding at the start, at
    /// the end, a hole in the middle, a row with nothing to attend, one mask row for all), every grouping of query
    /// heads.</summary>
    [Theory]
    [InlineData(8, 11, 20)] // d = 20: full vectors and tails in every width
    [InlineData(2, 11, 20)]
    [InlineData(1, 11, 20)]
    [InlineData(2, 2100, 20)] // a long source: the weights' buffer is rented instead of on the stack
    [InlineData(8, 19, 68)] // d = 68: the eight- and four-vector weighted sums, then tails
    public void OneQueryAttentionMatchesLibTorch(int kvHeads, int positions, int d)
    {
        using var scope = NewDisposeScope();
        const int heads = 8, batch = 4;
        manual_seed(kvHeads);
        var config = Config(NormKind.Seed, heads * d, heads, kvHeads);
        var q = randn(batch, 1, heads * d);
        var keys = randn(batch, kvHeads, positions, d);
        var values = randn(batch, kvHeads, positions, d);
        // Row 0: two masked positions first (a row that joined a running batch); row 1: 7 real positions, then
        // padding; row 2: a hole at position 3; row 3: nothing to attend.
        var bits = Enumerable.Range(0, batch * positions).Select(i => (i / positions, i % positions) switch
        {
            (0, < 2) or (1, >= 7) or (2, 3) or (3, _) => false,
            _ => true,
        }).ToArray();
        var mask = tensor(bits, new long[] { batch, 1, 1, positions });
        var shared = tensor(Enumerable.Range(0, positions).Select(j => j != 5).ToArray(), new long[] { 1, 1, 1, positions });
        foreach (var m in new[] { mask, shared, null })
        {
            var outputs = Paths.Select(p => Floats(new AttentionHeads(config, null, p).Attend(q, keys, values, m))).ToArray();
            for (var i = 1; i < Paths.Length; i++)
            {
                Fixtures.AssertClose(outputs[0], outputs[i], 1e-5, $"{Paths[i]} kv heads {kvHeads}");
                Fixtures.AssertClose(outputs[1], outputs[i], 1e-6, $"{Paths[i]} against AVX-512");
                Assert.NotEqual(outputs[0], outputs[i]); // the kernel ran (rounding differs from LibTorch's somewhere)
                // Row 3 of the first mask has nothing to attend: zeros, as LibTorch gives.
                if (ReferenceEquals(m, mask)) Assert.All(outputs[i].Skip(3 * heads * d), v => Assert.Equal(0f, v));
            }
        }
        foreach (var path in Paths.Skip(1))
        {
            var own = new AttentionHeads(config, null, path);
            var batched = Floats(own.Attend(q, keys, values, mask));
            // Row 1 alone over its 7 real positions, no mask: the same bits as beside the others with its padding.
            var alone = Floats(own.Attend(q[1].unsqueeze(0), keys[1].unsqueeze(0).narrow(2, 0, 7).contiguous(),
                values[1].unsqueeze(0).narrow(2, 0, 7).contiguous(), null));
            Assert.Equal(batched.Skip(heads * d).Take(heads * d), alone);
            // Row 0 alone over the positions after its two masked ones: the same bits too.
            var late = Floats(own.Attend(q[0].unsqueeze(0), keys[0].unsqueeze(0).narrow(2, 2, positions - 2).contiguous(),
                values[0].unsqueeze(0).narrow(2, 2, positions - 2).contiguous(), null));
            Assert.Equal(batched.Take(heads * d), late);
        }
    }

    /// <summary>Cached decode steps: this step's keys and values go into the cache and attention covers every cached
    /// position, with and without a per-row key mask (rows that joined later), against LibTorch's append + scaled dot
    /// product; the cached keys and values are the same bits.</summary>
    [Theory]
    [InlineData(8, false)]
    [InlineData(2, true)]
    [InlineData(1, false)]
    public void CachedStepsMatchLibTorch(int kvHeads, bool masked)
    {
        using var scope = NewDisposeScope();
        const int heads = 8, d = 12, batch = 3, steps = 6;
        manual_seed(kvHeads + 10);
        var config = Config(NormKind.Seed, heads * d, heads, kvHeads);
        var width = heads * d + 2 * kvHeads * d;
        var inputs = Enumerable.Range(0, steps).Select(_ => randn(batch, 1, width)).ToArray();
        var results = new List<(float[][] Outputs, float[] Keys, float[] Values)>();
        foreach (var path in Paths)
        {
            var attention = new AttentionHeads(config, null, path);
            using var cache = new KvCache(1, batch, kvHeads, steps + 2, d, ones(batch, 1, 1, 5), ScalarType.Float32, CPU);
            var outputs = new float[steps][];
            for (var s = 0; s < steps; s++)
            {
                // From step 2 on, row 2 does not see positions 0 and 1 (as a row that joined at step 2).
                var step = s;
                var mask = masked
                    ? tensor(Enumerable.Range(0, batch * (s + 1)).Select(i => !(i / (step + 1) == 2 && i % (step + 1) < 2 && step >= 2)).ToArray(),
                        new long[] { batch, 1, 1, s + 1 })
                    : null;
                outputs[s] = Floats(attention.SelfAttend(inputs[s], mask, s, cache, 0));
                cache.Advance(1);
            }
            var (k, v, shift, _) = cache.Stores(0);
            results.Add((outputs, Floats(k.narrow(2, shift, steps)), Floats(v.narrow(2, shift, steps))));
        }
        for (var i = 1; i < Paths.Length; i++)
        {
            for (var s = 0; s < steps; s++)
                Fixtures.AssertClose(results[0].Outputs[s], results[i].Outputs[s], 1e-5, $"{Paths[i]} step {s}");
            Assert.NotEqual(results[0].Outputs.SelectMany(o => o), results[i].Outputs.SelectMany(o => o)); // the kernel ran
            Assert.Equal(results[0].Keys, results[i].Keys);
            Assert.Equal(results[0].Values, results[i].Values);
        }
    }

    /// <summary>What the kernel does not handle goes to LibTorch: the same bits as the LibTorch path.</summary>
    [Fact]
    public void RotaryFloatMasksAndManyQueriesUseLibTorch()
    {
        using var scope = NewDisposeScope();
        const int heads = 4, d = 8, batch = 2;
        manual_seed(3);
        var config = Config(NormKind.Seed, heads * d, heads);
        var keys = randn(batch, heads, 6, d);
        var values = randn(batch, heads, 6, d);
        var lib = new AttentionHeads(config, null, null);
        var own = new AttentionHeads(config, null, CpuKernel.Avx2);
        var bias = randn(batch, 1, 1, 6); // a float mask (a position bias)
        var q1 = randn(batch, 1, heads * d);
        Assert.Equal(Floats(lib.Attend(q1, keys, values, bias)), Floats(own.Attend(q1, keys, values, bias)));
        var q3 = randn(batch, 3, heads * d);
        Assert.Equal(Floats(lib.Attend(q3, keys, values, null)), Floats(own.Attend(q3, keys, values, null)));

        using var rotary = new Rotary(16, d, 10000, CPU, ScalarType.Float32);
        var outputs = new[] { (CpuKernel?)null, CpuKernel.Avx2 }.Select(path =>
        {
            var h = new AttentionHeads(config, rotary, path);
            using var cache = new KvCache(1, batch, heads, 4, d, ones(batch, 1, 1, 5), ScalarType.Float32, CPU);
            manual_seed(4);
            var all = new List<float>();
            for (var s = 0; s < 3; s++)
            {
                all.AddRange(Floats(h.SelfAttend(randn(batch, 1, 3 * heads * d), null, s, cache, 0)));
                cache.Advance(1);
            }
            return all;
        }).ToArray();
        Assert.Equal(outputs[0], outputs[1]);
    }

    /// <summary>A rotary fixture with random learned positions instead (rotary models keep the per-tensor step): the
    /// raw step's SwiGLU and grouped-query attention on real weights.</summary>
    private static TransformerModel WithLearnedPositions(string fixture)
    {
        var folder = Fixtures.Path_(fixture.Split('/'));
        var config = FolderConfig.Read(Path.Combine(folder, "config.json")) with { Positions = PositionKind.Learned };
        var tensors = SafetensorsFile.Read(Path.Combine(folder, "model.safetensors"));
        manual_seed(9);
        tensors["src_pos.embedding.weight"] = randn(config.MaxSourcePositions, config.DModel).mul(0.1);
        tensors["tgt_pos.embedding.weight"] = randn(config.MaxTargetPositions, config.DModel).mul(0.1);
        using var w = new WeightSet(tensors, fixture, CPU, ScalarType.Float32)
        {
            Kernels = LinearKernels.Choose(LinearKernel.Auto, WeightQuantization.None, CPU, ScalarType.Float32),
        };
        return new TransformerModel(config, w);
    }

    /// <summary>Decode steps on raw memory (every decoder layer without a tensor per operation) against the same
    /// model's per-tensor steps: the same kernels in the same order, so ReLU models give the same bits (SiLU's exp
    /// may round differently). Padded sources, a beam-style reorder and a batch that shrinks.</summary>
    [Theory]
    [InlineData("seed-tiny", true)]
    [InlineData("variants/serial-seed", true)]
    [InlineData("hf-tiny/m2m100", true)]
    [InlineData("hf-tiny/marian", false)] // post-norm, SiLU
    [InlineData("variants/serial-gqa-rmsnorm-rotary-swiglu+learned", false)] // SwiGLU, 2 KV heads for 4, RMSNorm
    public void RawStepsMatchThePerTensorPath(string fixture, bool exact)
    {
        var parts = fixture.Split('/');
        using var model = fixture.EndsWith("+learned", StringComparison.Ordinal) ? WithLearnedPositions(fixture[..^"+learned".Length])
            : parts.Length == 1
            ? ModelLoader.LoadSeedCheckpoint(Fixtures.Path_(fixture, "tmodel.pt"),
                new ModelLoadOptions { Heads = Fixtures.Json(fixture, "model_args.json").GetProperty("h").GetInt32() })
            : ModelLoader.LoadFolder(Fixtures.Path_(parts));
        Assert.True(model.RawSteps);
        using var scope = NewDisposeScope();
        var lengths = new[] { 5, 9, 7 };
        var source = new long[3 * 9];
        for (var r = 0; r < 3; r++)
            for (var j = 0; j < 9; j++)
                source[r * 9 + j] = j < lengths[r] - 1 ? 4 + (r * 7 + j * 5) % 30 : j == lengths[r] - 1 ? model.EosId : model.PadId;
        var ids = tensor(source, new long[] { 3, 9 });
        using var raw = model.Start(ids, 8);
        using var plain = model.Start(ids, 8);
        var feed = Enumerable.Repeat((long)model.SosId, 3).ToArray();
        try
        {
            for (var step = 0; step < 8; step++)
            {
                if (step == 3)
                    foreach (var c in new[] { raw, plain }) c.Reorder(tensor(new long[] { 2, 0, 0 }));
                if (step == 5)
                {
                    foreach (var c in new[] { raw, plain }) c.Reorder(tensor(new long[] { 1, 2 }));
                    feed = feed.Skip(1).ToArray();
                }
                model.PerTensorSteps = false;
                var count = model.RawStepCount;
                var a = model.Step(tensor(feed, new long[] { feed.Length, 1 }), raw);
                Assert.Equal(count + 1, model.RawStepCount);
                model.PerTensorSteps = true;
                var b = model.Step(tensor(feed, new long[] { feed.Length, 1 }), plain);
                Assert.Equal(count + 1, model.RawStepCount);
                if (exact) Assert.Equal(Floats(b), Floats(a));
                else Fixtures.AssertClose(Floats(b), Floats(a), 1e-5, $"{fixture} step {step}");
                feed = a.argmax(-1).data<long>().ToArray();
            }
        }
        finally
        {
            model.PerTensorSteps = false;
        }
    }

    /// <summary>Embeddings gathered on the host (CPU float32 models on our kernels) against LibTorch's ops: stored
    /// sinusoids with the √d scale, learned positions with an offset, fairseq's computed table whose pad tokens get no
    /// position, per-row positions (rows that joined later): the same bits.</summary>
    [Theory]
    [InlineData(PositionKind.Sinusoidal, true)]
    [InlineData(PositionKind.Learned, false)]
    [InlineData(PositionKind.Fairseq, true)]
    public void HostEmbeddingsMatchLibTorch(PositionKind kind, bool scale)
    {
        using var scope = NewDisposeScope();
        const int vocab = 12, d = 10, positions = 16;
        manual_seed(5);
        var config = Config(NormKind.Seed, d) with
        {
            Positions = kind, EmbeddingScale = scale, PositionOffset = kind == PositionKind.Learned ? 2 : 0, PadId = 1,
            TargetVocabSize = vocab, MaxTargetPositions = positions,
        };
        var table = randn(vocab, d);
        var stored = kind switch
        {
            PositionKind.Sinusoidal => ("tgt_pos.pe", randn(1, positions, d)),
            PositionKind.Learned => ("tgt_pos.embedding.weight", randn(positions + 2, d)),
            _ => ((string, Tensor)?)null,
        };
        Embeddings Make(CpuKernel? kernel)
        {
            var tensors = new Dictionary<string, Tensor> { ["tgt_embed.embedding.weight"] = table.clone() };
            if (stored is { } p) tensors[p.Item1] = p.Item2.clone();
            using var w = new WeightSet(tensors, "test", CPU, ScalarType.Float32)
            {
                Kernels = kernel is null ? LinearKernels.LibTorch : new LinearKernels(kernel, PackedFormat.Float32),
            };
            var e = new Embeddings(w, "tgt", vocab, positions, config);
            w.Commit();
            return e;
        }
        using var lib = Make(null);
        using var host = Make(CpuKernel.Avx2);
        var ids = tensor(new long[] { 4, 1, 7, 11, 1, 3 }, new long[] { 2, 3 }); // 1 is the pad id
        foreach (var offset in new[] { 0, 5 })
            Assert.Equal(Floats(lib.Forward(ids, offset)), Floats(host.Forward(ids, offset)));
        var rows = tensor(new long[] { 3, 0 }, new long[] { 2, 1 });
        var single = tensor(new long[] { 1, 9 }, new long[] { 2, 1 });
        Assert.Equal(Floats(lib.Forward(single, rows)), Floats(host.Forward(single, rows)));
        Assert.NotEqual(Floats(host.Forward(single, 0)), Floats(host.Forward(single, 4))); // positions were added
        // The host path made one tensor (the output); LibTorch's several.
        using (var counted = NewDisposeScope())
        {
            host.Forward(ids, 0);
            host.Forward(single, rows);
            Assert.Equal(2, counted.DisposablesCount);
            lib.Forward(ids, 0);
            Assert.True(counted.DisposablesCount > 3);
        }
    }

    /// <summary>Greedy's best token and log-probability read on the host from CPU float32 scores, against LibTorch's
    /// log-softmax and max: ties (first index, −0 before +0), the largest in the tail, a banned (−∞) entry, a row of −∞, a NaN row, a row with +∞, and strided scores (which
    /// take LibTorch's path).</summary>
    [Fact]
    public void HostArgmaxMatchesLibTorch()
    {
        using var scope = NewDisposeScope();
        manual_seed(11);
        var logits = randn(7, 1003).mul(4); // 1003: whole vectors and a tail
        logits[1, 7] = logits[1].max() + 1; // a tie: the first of the two wins
        logits[1, 900] = logits[1, 7].clone();
        logits[2, 5] = tensor(float.NegativeInfinity);
        logits[3] = tensor(float.NegativeInfinity);
        logits[4, 17] = tensor(float.NaN);
        logits[5, 33] = tensor(float.PositiveInfinity); // inf − inf: a NaN row for LibTorch too
        logits[0, 1001] = logits[0].max() + 1; // the largest in the tail, past the whole vectors
        logits[6] = logits[6].abs().neg() - 1; // the largest a −0 tied with a later +0: the first wins
        logits[6, 3] = tensor(-0f);
        logits[6, 10] = tensor(0f);
        foreach (var scores in new[] { logits, logits.t().contiguous().t() })
        {
            var (tokens, best) = Decoding.Search.Best(scores);
            var (libBest, libIndex) = scores.log_softmax(-1).max(-1);
            Assert.Equal(libIndex.data<long>().ToArray(), tokens);
            var expected = libBest.data<float>().ToArray();
            for (var r = 0; r < expected.Length; r++)
            {
                if (float.IsNaN(expected[r])) Assert.True(float.IsNaN(best[r]), $"row {r}");
                else Assert.True(Math.Abs(expected[r] - best[r]) <= 1e-6 * Math.Max(1, Math.Abs(expected[r])), $"row {r}: {expected[r]} vs {best[r]}");
            }
        }
        Assert.Equal(7, Decoding.Search.Best(logits).Tokens[1]);
        Assert.Equal(1001, Decoding.Search.Best(logits).Tokens[0]);
        Assert.Equal(3, Decoding.Search.Best(logits).Tokens[6]);
        using var counted = NewDisposeScope();
        Decoding.Search.Best(logits);
        Assert.Equal(0, counted.DisposablesCount); // read in place: no tensor made
    }

    /// <summary>Kernels read tensors through one pointer; TorchSharp's byte span refuses tensors over 2 GiB (a large
    /// KV cache), so the address comes from a view of the first element there.</summary>
    [Fact]
    public void PointerOfATensorOver2GiBIsItsFirstElement()
    {
        using var scope = NewDisposeScope();
        var big = empty(600_000_000L); // 2.4 GB of address space, never written
        var start = Modeling.Kernels.PackedLinear.Pointer(big);
        Assert.Equal(Modeling.Kernels.PackedLinear.Pointer(big.narrow(0, 0, 16)), start);
        Assert.Equal(start + 599_999_984L * sizeof(float), Modeling.Kernels.PackedLinear.Pointer(big.narrow(0, 599_999_984L, 16)));
    }

    /// <summary>The kernels read a mask as bytes with a row stride, so only the shapes they were written for reach them:
    /// anything else (a per-head mask, a wrong width or batch, float, strided) stays on LibTorch's path.</summary>
    [Fact]
    public void KernelsTakeOnlyMasksOfTheShapeTheyRead()
    {
        using var scope = NewDisposeScope();
        Assert.True(AttentionHeads.KernelMask(null, 2, 5));
        Assert.True(AttentionHeads.KernelMask(ones(new long[] { 2, 1, 1, 5 }, ScalarType.Bool), 2, 5));
        Assert.True(AttentionHeads.KernelMask(ones(new long[] { 1, 1, 1, 5 }, ScalarType.Bool), 2, 5)); // one row for all
        Assert.False(AttentionHeads.KernelMask(ones(new long[] { 2, 1, 1, 5 }, ScalarType.Bool), 2, 6)); // width
        Assert.False(AttentionHeads.KernelMask(ones(new long[] { 3, 1, 1, 5 }, ScalarType.Bool), 2, 5)); // batch
        Assert.False(AttentionHeads.KernelMask(ones(new long[] { 2, 4, 1, 5 }, ScalarType.Bool), 2, 5)); // per head
        Assert.False(AttentionHeads.KernelMask(ones(new long[] { 2, 1, 2, 5 }, ScalarType.Bool), 2, 5)); // two queries
        Assert.False(AttentionHeads.KernelMask(zeros(new long[] { 2, 1, 1, 5 }), 2, 5)); // float (a bias)
        Assert.False(AttentionHeads.KernelMask(ones(new long[] { 2, 1, 1, 10 }, ScalarType.Bool).narrow(3, 0, 5), 2, 5)); // strided
    }
}
