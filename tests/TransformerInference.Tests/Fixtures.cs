using System.Text.Json;
using TorchSharp;
using TransformerInference.Modeling;
using static TorchSharp.torch;

namespace TransformerInference.Tests;

/// <summary>Paths of the copied reference fixtures and JSON helpers.</summary>
internal static class Fixtures
{
    public static string Root => Path.Combine(AppContext.BaseDirectory, "Fixtures");
    public static string Path_(params string[] parts) => Path.Combine(new[] { Root }.Concat(parts).ToArray());

    /// <summary>A translator over the seed-tiny checkpoint (4 heads, from its model_args.json) and its tokenizers.</summary>
    public static Translator SeedTranslator() => Translator.Load(Path_("seed-tiny", "tmodel.pt"), Path_("seed-tiny", "tokenizer_en.json"),
        Path_("seed-tiny", "tokenizer_ne.json"));

    public static JsonElement Json(params string[] parts)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path_(parts)));
        return doc.RootElement.Clone();
    }

    public static int[] Ints(this JsonElement e) => e.EnumerateArray().Select(x => x.GetInt32()).ToArray();
    public static float[] Floats(this JsonElement e) => e.EnumerateArray().Select(x => x.GetSingle()).ToArray();

    public static string[] VariantNames =>
        Directory.GetDirectories(Path_("variants")).Select(Path.GetFileName).OrderBy(n => n, StringComparer.Ordinal).ToArray()!;

    /// <summary>The reference greedy loop: re-runs the whole decoder over the prefix with a causal mask at every step.</summary>
    public static List<int> NaiveGreedy(TransformerModel model, IReadOnlyList<int> source, int maxNew, int padTo = 0)
    {
        using var _ = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        var ids = source.Select(i => (long)i).ToList();
        while (ids.Count < padTo) ids.Add(model.PadId);
        var src = torch.tensor(ids.ToArray(), new long[] { 1, ids.Count });
        var srcMask = Masks.SourceKeyMask(src, model.PadId);
        var memory = model.Encode(src, srcMask);
        var output = new List<int> { model.SosId };
        for (var step = 0; step < maxNew; step++)
        {
            using var stepScope = torch.NewDisposeScope();
            var tgt = torch.tensor(output.Select(i => (long)i).ToArray(), new long[] { 1, output.Count });
            var hidden = model.Decode(memory, srcMask, tgt, Masks.Causal(output.Count));
            var next = (int)model.Project(hidden.select(1, output.Count - 1)).argmax(-1).item<long>();
            output.Add(next);
            if (next == model.EosId) break;
        }
        return output;
    }

    /// <summary>Scores [positions, vocab] of the decoder over the whole <paramref name="prefix"/> (no cache).</summary>
    public static float[][] TeacherForced(TransformerModel model, int[] source, int[] prefix) =>
        TeacherForced64(model, source, prefix).Select(r => r.Select(x => (float)x).ToArray()).ToArray();

    /// <summary><see cref="TeacherForced"/> read as float64: exact for a Float32 model, full precision for a Float64 one.</summary>
    public static double[][] TeacherForced64(TransformerModel model, int[] source, int[] prefix)
    {
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        var s = torch.tensor(source.Select(i => (long)i).ToArray(), new long[] { 1, source.Length });
        var mask = Masks.SourceKeyMask(s, model.PadId);
        var memory = model.Encode(s, mask);
        var t = torch.tensor(prefix.Select(i => (long)i).ToArray(), new long[] { 1, prefix.Length });
        var scores = model.Project(model.Decode(memory, mask, t, Masks.Causal(prefix.Length)))[0].to(ScalarType.Float64);
        return Enumerable.Range(0, prefix.Length).Select(p => scores[p].data<double>().ToArray()).ToArray();
    }

    public static void AssertClose(float[] expected, float[] actual, double tolerance, string what) =>
        AssertClose(Array.ConvertAll(expected, x => (double)x), Array.ConvertAll(actual, x => (double)x), tolerance, what);

    public static void AssertClose(double[] expected, double[] actual, double tolerance, string what)
    {
        Xunit.Assert.Equal(expected.Length, actual.Length);
        var worst = expected.Zip(actual, (e, a) => Math.Abs(e - a)).Max();
        Xunit.Assert.True(worst <= tolerance, $"{what}: largest difference {worst:E3} exceeds {tolerance:E1}");
    }
}
