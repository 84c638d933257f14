using System.Globalization;
using System.Text.Json;
using Xunit;

namespace TransformerInference.Tests;

/// <summary>The <c>transformer-inference</c> tool's command line against every <c>expected_beam.json</c> case: the beam flags with
/// Hugging Face's meanings, and <c>--format jsonl</c> lines whose <c>n_best</c> carries generate's ids, the texts
/// and the length-penalised scores.</summary>
public class CliBeamTests
{
    public static TheoryData<string> Families => BeamCases.Families();

    private static string Number(double v) => v.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>The case's settings as flags, then its inputs.</summary>
    /// <param name="family">The hf-tiny folder.</param>
    /// <param name="c">The case.</param>
    /// <param name="folderLength">Leave the length to the folder when the case uses its defaults (the tool rejects a
    /// --max-length beyond the model's positions, as 512 of Marian's generation_config.json is here).</param>
    private static List<string> Arguments(string family, BeamCase c, bool folderLength = false)
    {
        var g = c.Generation;
        string Int(string name) => g.GetProperty(name).GetInt32().ToString(CultureInfo.InvariantCulture);
        var args = new List<string>
        {
            "--model", Fixtures.Path_("hf-tiny", family), "--format", "jsonl",
            "--beam", Int("num_beams"), "--n-best", Int("num_return_sequences"),
            "--length-penalty", Number(g.GetProperty("length_penalty").GetDouble()),
            "--early-stopping", g.GetProperty("early_stopping") is { ValueKind: JsonValueKind.String } s ? s.GetString()! : g.GetProperty("early_stopping").GetBoolean() ? "true" : "false",
            "--min-length", Int("min_length"), "--no-repeat-ngram", Int("no_repeat_ngram_size"),
            "--repetition-penalty", Number(g.GetProperty("repetition_penalty").GetDouble()),
        };
        if (!(folderLength && c.FromGenerationConfig)) args.AddRange(new[] { "--max-length", Int("max_length") });
        if (c.SourceLanguage is { } source) args.AddRange(new[] { "--src-lang", source });
        if (c.TargetLanguage is { } target) args.AddRange(new[] { "--tgt-lang", target });
        args.Add("--");
        args.AddRange(c.Inputs);
        return args;
    }

    /// <summary>Checks one jsonl line per input against the case.</summary>
    private static void AssertLines(BeamCase c, string output, double tolerance)
    {
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(c.Inputs.Length, lines.Length);
        for (var i = 0; i < lines.Length; i++)
        {
            using var doc = JsonDocument.Parse(lines[i]);
            var line = doc.RootElement;
            Assert.Equal(c.Inputs[i], line.GetProperty("input").GetString());
            Assert.True(line.TryGetProperty("n_best", out _), $"{c.Name}: {lines[i]}");
            var best = line.GetProperty("n_best").EnumerateArray().ToArray();
            c.AssertInput(i, best.Select(h => h.GetProperty("ids").Ints()).ToArray(), best.Select(h => h.GetProperty("score").GetDouble()).ToArray(),
                best.Select(h => h.GetProperty("output").GetString()!).ToArray(), tolerance);
            Assert.Equal(best[0].GetProperty("output").GetString(), line.GetProperty("output").GetString());
        }
    }

    [Theory, MemberData(nameof(Families))]
    public async Task ToolReproducesEveryCase(string family)
    {
        var file = BeamCases.Load(family);
        foreach (var c in file.Cases)
        {
            var stdout = new StringWriter { NewLine = "\n" };
            var stderr = new StringWriter { NewLine = "\n" };
            var code = await Cli.CliApp.RunAsync(new[] { "translate", "--quiet" }.Concat(Arguments(family, c, folderLength: true)).ToArray(), new StringReader(""), stdout, stderr);
            Assert.True(code == 0, $"{c.Name}: exit code {code}: {stderr}");
            AssertLines(c, stdout.ToString(), file.Tolerance);
        }
    }

    [Fact]
    public async Task BadEarlyStoppingIsAUsageError()
    {
        var stderr = new StringWriter();
        var code = await Cli.CliApp.RunAsync(new[] { "translate", "--model", Fixtures.Path_("hf-tiny", "marian"), "--early-stopping", "maybe", "x" },
            new StringReader(""), new StringWriter(), stderr);
        Assert.Equal(2, code);
        Assert.Contains("--early-stopping", stderr.ToString());
    }
}
