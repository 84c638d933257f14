using System.Globalization;
using System.Reflection;
using System.Text.Json;
using Xunit;

namespace TransformerInference.Tests;

/// <summary>Console output is process-wide: tests that capture it run alone.</summary>
[CollectionDefinition(nameof(ConsoleCapture), DisableParallelization = true)]
public sealed class ConsoleCapture;

/// <summary>The translate sample's command line against every <c>expected_beam.json</c> case: the beam flags with
/// Hugging Face's meanings, and <c>--format jsonl</c> lines whose <c>n_best</c> carries generate's ids, the texts
/// and the length-penalised scores.</summary>
[Collection(nameof(ConsoleCapture))]
public class TranslateSampleBeamTests
{
    public static TheoryData<string> Families => BeamCases.Families();

    /// <summary>Runs the sample's entry point in this process and returns its exit code and standard output.</summary>
    private static (int Code, string Output) RunSample(IEnumerable<string> args)
    {
        var entry = Assembly.Load("translate").EntryPoint ?? throw new InvalidOperationException("translate has no entry point");
        var previous = Console.Out;
        using var output = new StringWriter(CultureInfo.InvariantCulture);
        Console.SetOut(output);
        try
        {
            var result = entry.Invoke(null, new object[] { args.ToArray() });
            var code = result is Task<int> task ? task.GetAwaiter().GetResult() : (int)result!;
            return (code, output.ToString());
        }
        finally
        {
            Console.SetOut(previous);
        }
    }

    private static string Number(double v) => v.ToString("R", CultureInfo.InvariantCulture);

    [Theory, MemberData(nameof(Families))]
    public void CommandLineReproducesEveryCase(string family)
    {
        var file = BeamCases.Load(family);
        foreach (var c in file.Cases)
        {
            var g = c.Generation;
            var args = new List<string>
            {
                "--model", Fixtures.Path_("hf-tiny", family), "--format", "jsonl",
                "--beam", g.GetProperty("num_beams").GetInt32().ToString(CultureInfo.InvariantCulture),
                "--n-best", g.GetProperty("num_return_sequences").GetInt32().ToString(CultureInfo.InvariantCulture),
                "--length-penalty", Number(g.GetProperty("length_penalty").GetDouble()),
                "--early-stopping", g.GetProperty("early_stopping") is { ValueKind: JsonValueKind.String } s ? s.GetString()! : g.GetProperty("early_stopping").GetBoolean() ? "true" : "false",
                "--min-length", g.GetProperty("min_length").GetInt32().ToString(CultureInfo.InvariantCulture),
                "--max-length", g.GetProperty("max_length").GetInt32().ToString(CultureInfo.InvariantCulture),
                "--no-repeat-ngram", g.GetProperty("no_repeat_ngram_size").GetInt32().ToString(CultureInfo.InvariantCulture),
                "--repetition-penalty", Number(g.GetProperty("repetition_penalty").GetDouble()),
            };
            if (c.SourceLanguage is { } source) args.AddRange(new[] { "--src-lang", source });
            if (c.TargetLanguage is { } target) args.AddRange(new[] { "--tgt-lang", target });
            args.Add("--");
            args.AddRange(c.Inputs);
            var (code, output) = RunSample(args);
            Assert.True(code == 0, $"{c.Name}: exit code {code}");
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
                    best.Select(h => h.GetProperty("output").GetString()!).ToArray(), file.Tolerance);
                Assert.Equal(best[0].GetProperty("output").GetString(), line.GetProperty("output").GetString());
            }
        }
    }

    [Fact]
    public void BadEarlyStoppingIsAUsageError()
    {
        var (code, _) = RunSample(new[] { "--model", Fixtures.Path_("hf-tiny", "marian"), "--early-stopping", "maybe", "x" });
        Assert.Equal(2, code);
    }
}
