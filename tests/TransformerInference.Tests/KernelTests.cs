using System.Text.Json;
using TorchSharp;
using TransformerInference.Decoding;
using TransformerInference.Loading;
using TransformerInference.Modeling;
using TransformerInference.Modeling.Kernels;
using Xunit;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;
using Generator = TransformerInference.Decoding.Generator;

namespace TransformerInference.Tests;

/// <summary>Our packed CPU kernels, each path forced on this machine (AVX-512 runs emulated where the CPU lacks it):
/// against LibTorch's product, against each other, and on the reference fixtures.</summary>
[Collection(LibTorchThreadsCollection.Name)]
public class KernelTests
{
    private static readonly CpuKernel[] Paths = { CpuKernel.Avx512, CpuKernel.Avx2, CpuKernel.Portable };

    /// <summary>Every path's output for one product (a fresh packed copy of <paramref name="weight"/> per path).</summary>
    private static float[][] RunAll(Tensor weight, Tensor? bias, Tensor x, PackedFormat format) =>
        Paths.Select(path =>
        {
            using var linear = new PackedLinear(weight.clone(), bias?.clone(), path, format);
            using var y = linear.Forward(x);
            return y.data<float>().ToArray();
        }).ToArray();

    [Theory]
    [InlineData(37, 29, true)] // partial last panel in every width
    [InlineData(200, 64, false)] // several full panels: the four-panel single-row kernel
    [InlineData(64, 7, true)]
    public void Float32PathsMatchLibTorchAndEachOtherBitForBit(int outFeatures, int inFeatures, bool withBias)
    {
        using var scope = NewDisposeScope();
        manual_seed(outFeatures);
        var weight = randn(outFeatures, inFeatures);
        var bias = withBias ? randn(outFeatures) : null;
        // 8 rows: 4 + 4; 9: 6 + 3; 13: 6 + 4 + 3; 14: 6 + 6 + 2 (a three-row pass repeating its second row);
        // 16: 6 + 6 + 4; 70: two row blocks; 130: three, the last of two rows (an encoder's many rows take the same
        // kernels as a decode step). The 512-bit path takes twelve rows at a time first: 12; 13: 12 + 1; 14: 12 + 2;
        // 15: 12 + 3; 16: 12 + 4; a 64-row block: 5 × 12 + 4.
        foreach (var rows in new[] { 1, 2, 3, 4, 5, 8, 9, 12, 13, 14, 15, 16, 70, 130 })
        {
            var x = randn(rows, inFeatures);
            var expected = F.linear(x, weight, bias).data<float>().ToArray();
            var outputs = RunAll(weight, bias, x, PackedFormat.Float32);
            foreach (var (output, path) in outputs.Zip(Paths))
                Fixtures.AssertClose(expected, output, 1e-4, $"{path} {rows}x{inFeatures}·{inFeatures}x{outFeatures}");
            Assert.Equal(outputs[0], outputs[1]);
            Assert.Equal(outputs[0], outputs[2]);
            // A row's result does not depend on its batch: the last row alone gives the same bits.
            var alone = RunAll(weight, bias, x[rows - 1].unsqueeze(0), PackedFormat.Float32)[1];
            Assert.Equal(outputs[1].Skip((rows - 1) * outFeatures).ToArray(), alone);
        }
    }

    [Theory]
    [InlineData(nameof(PackedFormat.Int8), 70)]
    [InlineData(nameof(PackedFormat.Float32), 130)] // an encoder's many rows: our kernels, split over threads by panels
    [InlineData(nameof(PackedFormat.BFloat16), 130)]
    public void ALargeProductSplitOverThreadsGivesTheSameBits(string formatName, int rows)
    {
        var format = Enum.Parse<PackedFormat>(formatName);
        using var scope = NewDisposeScope();
        manual_seed(11);
        var weight = randn(600, 64);
        var x = randn(rows, 64);
        using var linear = new PackedLinear(weight.clone(), null, CpuKernel.Avx2, format);
        var threads = get_num_threads();
        float[] single, split;
        try
        {
            set_num_threads(1);
            single = linear.Forward(x).data<float>().ToArray();
            set_num_threads(3);
            split = linear.Forward(x).data<float>().ToArray();
        }
        finally
        {
            set_num_threads(threads);
        }
        Assert.Equal(single, split);
    }

    [Theory]
    [InlineData(150, 48)] // several panels and a partial one in every width
    [InlineData(37, 29)] // one full and one partial panel (AVX2), odd k
    [InlineData(70, 7)]
    public void Int8AndBFloat16PathsComputeTheProductOfTheRoundedWeights(int outFeatures, int inFeatures)
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        var weight = randn(outFeatures, inFeatures);
        weight[5] = zeros(inFeatures); // an all-zero channel has scale 0
        var bias = randn(outFeatures);
        // Leading dimensions are kept. 15 rows: 12 + 3 on the 512-bit path; 134: three row blocks; 518: int8 quantizes
        // and runs 256 rows at a time.
        var x = randn(1, 2 * PackedLinear.QuantizedRows + 6, inFeatures);
        foreach (var rows in new[] { 6, 15, 134, 2 * PackedLinear.QuantizedRows + 6 })
        {
            var input = x.narrow(1, 0, rows);
            // int8 reference written out independently: weights symmetric per output channel (max|w| / 127), each row of
            // the activations symmetric on the int16 grid whose int32 sums cannot overflow, both rounded half to even;
            // the integer products summed in float64 (exact here), then scaled.
            var scale = weight.abs().amax(new long[] { 1 }, keepdim: true) / 127;
            var q = (weight / where(scale == 0, ones_like(scale), scale)).round().clamp(-127, 127);
            var limit = Math.Min(32767, int.MaxValue / (127L * ((inFeatures + 1) / 2 * 2)));
            var rowMax = input.abs().amax(new long[] { -1 }, keepdim: true);
            var qx = (input * (full_like(rowMax, limit) / rowMax)).round(); // a true division, as the kernel does
            var integer = F.linear(qx.to(ScalarType.Float64), q.to(ScalarType.Float64));
            var references = new Dictionary<PackedFormat, Tensor>
            {
                [PackedFormat.Int8] = (integer * (rowMax / limit).to(ScalarType.Float64) * scale.t().to(ScalarType.Float64)).to(ScalarType.Float32) + bias,
                [PackedFormat.BFloat16] = F.linear(input, weight.to(ScalarType.BFloat16).to(ScalarType.Float32), bias),
            };
            foreach (var (format, reference) in references)
            {
                var outputs = RunAll(weight, bias, input, format);
                foreach (var (output, path) in outputs.Zip(Paths))
                    Fixtures.AssertClose(reference.data<float>().ToArray(), output, 1e-4, $"{format} {path} {rows} rows");
                Assert.Equal(outputs[0], outputs[1]);
                Assert.Equal(outputs[0], outputs[2]);
                // A row's result does not depend on its batch, at every row count.
                var alone = RunAll(weight, bias, input[0, rows - 1].unsqueeze(0), format)[1];
                Assert.Equal(outputs[1].Skip((rows - 1) * outFeatures).ToArray(), alone);
            }
            using var shaped = new PackedLinear(weight.clone(), null, CpuKernel.Avx2, PackedFormat.Int8);
            Assert.Equal(new long[] { 1, rows, outFeatures }, shaped.Forward(input).shape);
        }
    }

    /// <summary>The int8 integer sums at their limit: every weight and activation at the top of its grid over 4,097
    /// inputs (odd: one padded pair), where one more unit of activation range would overflow int32; and a row holding
    /// NaN or ∞ gives NaN outputs without touching the other rows.</summary>
    [Fact]
    public void Int8IntegerSumsStayExactAtTheirLimitAndBadRowsGiveNaN()
    {
        using var scope = NewDisposeScope();
        const int k = 4097;
        var limit = Int8PairWeights.ActivationLimit(k);
        Assert.True(127L * (k + 1) * limit <= int.MaxValue && 127L * (k + 1) * (limit + 1) > int.MaxValue);
        var weight = ones(3, k) * 0.5f;
        var x = ones(5, k) * 2;
        x[1, 7] = float.NaN;
        x[2, 0] = float.PositiveInfinity;
        x[3] = zeros(k);
        x[4] = ones(k) * 1e-40f; // subnormal: limit / max|x| is not a float
        foreach (var output in RunAll(weight, null, x, PackedFormat.Int8))
        {
            var y = output.Chunk(3).ToArray();
            Assert.All(y[4], v => Assert.Equal(0f, v));
            Assert.All(y[0], v => Assert.Equal(k, v, k * 1e-6)); // (k · limit · 127) · (2 / limit) · (0.5 / 127)
            Assert.All(y[1], v => Assert.True(float.IsNaN(v)));
            Assert.All(y[2], v => Assert.True(float.IsNaN(v)));
            Assert.All(y[3], v => Assert.Equal(0f, v));
        }
    }

    public static TheoryData<string, string> FixturesAndKernels()
    {
        var data = new TheoryData<string, string>();
        foreach (var fixture in new[] { "seed-tiny", "thinam-tiny" })
            foreach (var kernel in new[] { "LibTorch", "Avx512", "Avx2", "Portable" })
                data.Add(fixture, kernel);
        return data;
    }

    /// <summary>Each kernel on the reference fixtures: teacher-forced step logits (uncached, whole prefix) within
    /// 1e-4, and cached greedy ids exact, every sentence batched together and some alone.</summary>
    [Theory, MemberData(nameof(FixturesAndKernels))]
    public void EveryKernelMatchesTheReferenceFixtures(string fixture, string kernel)
    {
        var heads = Fixtures.Json(fixture, "model_args.json").GetProperty("h").GetInt32();
        using var model = ModelLoader.LoadSeedCheckpoint(Fixtures.Path_(fixture, "tmodel.pt"),
            new ModelLoadOptions { Heads = heads, Kernel = Enum.Parse<LinearKernel>(kernel) });
        var sentences = Fixtures.Json(fixture, "expected.json").GetProperty("sentences").EnumerateArray()
            .Where(s => s.GetProperty("output_ids").ValueKind == JsonValueKind.Array).ToList();
        foreach (var s in sentences.Where(s => s.TryGetProperty("step_logits", out _)))
        {
            var source = new[] { model.SosId }.Concat(s.GetProperty("src_ids").Ints()).Append(model.EosId).ToArray();
            var steps = s.GetProperty("step_logits").EnumerateArray().ToArray();
            var scores = Fixtures.TeacherForced(model, source, s.GetProperty("output_ids").Ints().Take(steps.Length).ToArray());
            for (var i = 0; i < steps.Length; i++)
                Fixtures.AssertClose(steps[i].Floats(), scores[i], 1e-4, $"{fixture} {kernel} '{s.GetProperty("src")}' step {i + 1}");
        }
        var sources = sentences.Select(s => (IReadOnlyList<int>)new[] { model.SosId }.Concat(s.GetProperty("src_ids").Ints()).Append(model.EosId).ToArray()).ToList();
        var batched = Generator.Generate(model, sources);
        for (var i = 0; i < sentences.Count; i++)
        {
            var expected = sentences[i].GetProperty("output_ids").Ints();
            Assert.Equal(expected, Full(model, batched[i][0]));
            if (i % 10 == 0) Assert.Equal(expected, Full(model, Generator.Generate(model, new[] { sources[i] })[0][0]));
        }
    }

    private static int[] Full(TransformerModel model, Hypothesis h) =>
        new[] { model.SosId }.Concat(h.Ids).Concat(h.Finished ? new[] { model.EosId } : Array.Empty<int>()).ToArray();

    [Fact]
    public void KernelChoiceRejectsWhatCannotRun()
    {
        Assert.Throws<ArgumentException>(() => LinearKernels.Choose(LinearKernel.Auto, WeightQuantization.Int8, CPU, ScalarType.BFloat16));
        Assert.Throws<ArgumentException>(() => LinearKernels.Choose(LinearKernel.LibTorch, WeightQuantization.Int8, CPU, ScalarType.Float32));
        Assert.Throws<ArgumentException>(() => LinearKernels.Choose(LinearKernel.Avx2, WeightQuantization.None, CPU, ScalarType.BFloat16));
        Assert.Null(LinearKernels.Choose(LinearKernel.Auto, WeightQuantization.None, CPU, ScalarType.BFloat16).Cpu);
        Assert.Equal(CpuKernel.Portable, LinearKernels.Choose(LinearKernel.Portable, WeightQuantization.Int8, CPU, ScalarType.Float32).Cpu);
        Assert.Equal(PackedFormat.Int8, LinearKernels.Choose(LinearKernel.Auto, WeightQuantization.Int8, CPU, ScalarType.Float32).Format);
    }
}
