using System.Text.Json;
using TransformerInference.Decoding;
using TransformerInference.Loading;
using Xunit;

namespace TransformerInference.Tests;

/// <summary>Beam search against Hugging Face's <c>generate</c> (the hf-tiny <c>expected_beam.json</c> cases): ids and
/// texts exact, sequence scores within the file's tolerance, through the search alone, through the translator (text
/// in, n-best out) and batched calls equal to one input at a time.</summary>
public class BeamSearchParityTests
{
    public static TheoryData<string> Families => BeamCases.Families();

    [Theory, MemberData(nameof(Families))]
    public void GeneratorReproducesEveryCase(string family)
    {
        var file = BeamCases.Load(family);
        using var model = ModelLoader.Load(Fixtures.Path_("hf-tiny", family));
        Assert.NotEmpty(file.Cases);
        foreach (var c in file.Cases)
        {
            var results = Generator.Generate(model, c.InputIds, c.Options(withForcedBos: true));
            for (var i = 0; i < c.InputIds.Length; i++)
                c.AssertInput(i, results[i].Select(h => Sequence(c, h)).ToArray(), results[i].Select(h => h.Score).ToArray(), null, file.Tolerance);
            // A batch gives what each input gives alone.
            if (c.InputIds.Length > 1)
                for (var i = 0; i < c.InputIds.Length; i++)
                {
                    var alone = Generator.Generate(model, new[] { c.InputIds[i] }, c.Options(withForcedBos: true))[0];
                    c.AssertInput(i, alone.Select(h => Sequence(c, h)).ToArray(), alone.Select(h => h.Score).ToArray(), null, file.Tolerance);
                }
        }
    }

    [Theory, MemberData(nameof(Families))]
    public void TranslatorReproducesEveryCase(string family)
    {
        var file = BeamCases.Load(family);
        var translators = new Dictionary<(string?, string?), Translator>();
        try
        {
            foreach (var c in file.Cases)
            {
                var key = (c.SourceLanguage, c.TargetLanguage);
                if (!translators.TryGetValue(key, out var translator))
                    translators[key] = translator = Translator.Load(Fixtures.Path_("hf-tiny", family),
                        new TranslatorOptions { SourceLanguage = c.SourceLanguage, TargetLanguage = c.TargetLanguage });
                // The target language comes from the translator (forced first token), the rest from the case.
                var results = translator.TranslateDetailed(c.Inputs, c.Options(withForcedBos: false));
                for (var i = 0; i < c.Inputs.Length; i++)
                {
                    var h = results[i].Hypotheses;
                    c.AssertInput(i, h.Select(x => x.Sequence.ToArray()).ToArray(), h.Select(x => x.Hypothesis.Score).ToArray(),
                        h.Select(x => x.Text).ToArray(), file.Tolerance);
                    Assert.Equal(h[0].Text, results[i].Text);
                }
            }
        }
        finally
        {
            foreach (var t in translators.Values) t.Dispose();
        }
    }

    [Theory, MemberData(nameof(Families))]
    public void FolderDefaultsAreTheGenerationConfigCase(string family)
    {
        // Translator.Load(folder) searches as generate() does with the folder's generation_config.json.
        var file = BeamCases.Load(family);
        foreach (var c in file.Cases.Where(c => c.FromGenerationConfig))
        {
            using var translator = Translator.Load(Fixtures.Path_("hf-tiny", family),
                new TranslatorOptions { SourceLanguage = c.SourceLanguage, TargetLanguage = c.TargetLanguage });
            var result = translator.TranslateDetailed(c.Inputs);
            for (var i = 0; i < c.Inputs.Length; i++)
                c.AssertInput(i, result[i].Hypotheses.Select(x => x.Sequence.ToArray()).ToArray(),
                    result[i].Hypotheses.Select(x => x.Hypothesis.Score).ToArray(), result[i].Hypotheses.Select(x => x.Text).ToArray(), file.Tolerance);
        }
    }

    private static int[] Sequence(BeamCase c, Hypothesis h) =>
        new[] { c.Start }.Concat(h.Ids).Concat(h.Finished ? new[] { c.Eos } : Array.Empty<int>()).ToArray();
}

/// <summary>One file of beam cases.</summary>
internal sealed record BeamFile(IReadOnlyList<BeamCase> Cases, double Tolerance);

/// <summary>One <c>generate</c> call of an <c>expected_beam.json</c>: its inputs, settings and expected rows.</summary>
internal sealed class BeamCase
{
    public required string Name { get; init; }
    public required string[] Inputs { get; init; }
    public required int[][] InputIds { get; init; }
    public string? SourceLanguage { get; init; }
    public string? TargetLanguage { get; init; }
    public required JsonElement Generation { get; init; }
    public required bool FromGenerationConfig { get; init; }
    /// <summary>Per input, its rows best first (padding after [EOS] removed), scores and texts.</summary>
    public required int[][][] Sequences { get; init; }
    public required double[][] Scores { get; init; }
    public required string[][] Outputs { get; init; }
    public int Start => Generation.GetProperty("decoder_start_token_id").GetInt32();
    public int Eos => Generation.GetProperty("eos_token_id").GetInt32();

    private int? NullableInt(string name) => Generation.GetProperty(name) is { ValueKind: JsonValueKind.Number } v ? v.GetInt32() : null;

    /// <summary>Every setting of the case as decoding options (the forced first token optional: a translator sets it
    /// from its target language).</summary>
    public DecodingOptions Options(bool withForcedBos) => new()
    {
        BeamSize = Generation.GetProperty("num_beams").GetInt32(),
        NBest = Generation.GetProperty("num_return_sequences").GetInt32(),
        MaxLength = Generation.GetProperty("max_length").GetInt32(),
        LengthPenalty = Generation.GetProperty("length_penalty").GetDouble(),
        EarlyStopping = Generation.GetProperty("early_stopping") switch
        {
            { ValueKind: JsonValueKind.True } => EarlyStopping.Immediate,
            { ValueKind: JsonValueKind.False } => EarlyStopping.Heuristic,
            var v when v.GetString() == "never" => EarlyStopping.Never,
            var v => throw new InvalidDataException($"{Name}: early_stopping {v}"),
        },
        MinLength = Generation.GetProperty("min_length").GetInt32(),
        NoRepeatNgramSize = Generation.GetProperty("no_repeat_ngram_size").GetInt32(),
        RepetitionPenalty = Generation.GetProperty("repetition_penalty").GetDouble(),
        DecoderStartTokenId = Start,
        ForcedBosTokenId = withForcedBos ? NullableInt("forced_bos_token_id") : null,
        ForcedEosTokenId = NullableInt("forced_eos_token_id"),
        BadWordsIds = Generation.GetProperty("bad_words_ids") is { ValueKind: JsonValueKind.Array } bad
            ? bad.EnumerateArray().Select(w => (IReadOnlyList<int>)w.Ints()).ToArray()
            : null,
    };

    /// <summary>Asserts input <paramref name="input"/>'s returned rows (ids as generate returns them, without the
    /// padding after [EOS]), scores and, when given, texts.</summary>
    public void AssertInput(int input, int[][] ids, double[] scores, string[]? texts, double tolerance)
    {
        var what = $"{Name} input {input}";
        Assert.True(Sequences[input].Length == ids.Length, $"{what}: {ids.Length} rows, expected {Sequences[input].Length}");
        for (var r = 0; r < ids.Length; r++)
        {
            Assert.True(Sequences[input][r].SequenceEqual(ids[r]),
                $"{what} row {r}: [{string.Join(", ", ids[r])}], expected [{string.Join(", ", Sequences[input][r])}]");
            Assert.True(Math.Abs(Scores[input][r] - scores[r]) <= tolerance, $"{what} row {r}: score {scores[r]}, expected {Scores[input][r]}");
            if (texts is not null) Assert.Equal(Outputs[input][r], texts[r]);
        }
    }
}

/// <summary>Reads the copied <c>expected_beam.json</c> files.</summary>
internal static class BeamCases
{
    /// <summary>Every hf-tiny folder that holds beam cases.</summary>
    public static TheoryData<string> Families()
    {
        var data = new TheoryData<string>();
        foreach (var dir in Directory.GetDirectories(Fixtures.Path_("hf-tiny")).Order(StringComparer.Ordinal))
            if (File.Exists(Path.Combine(dir, "expected_beam.json"))) data.Add(Path.GetFileName(dir));
        return data;
    }

    public static BeamFile Load(string family)
    {
        var root = Fixtures.Json("hf-tiny", family, "expected_beam.json");
        Assert.Equal("hf-tiny-expected-beam/1", root.GetProperty("format").GetString());
        var cases = new List<BeamCase>();
        foreach (var c in root.GetProperty("cases").EnumerateArray())
        {
            var batched = c.TryGetProperty("inputs", out var inputs);
            var texts = batched ? inputs.EnumerateArray().Select(e => e.GetString()!).ToArray() : new[] { c.GetProperty("input").GetString()! };
            var ids = batched ? c.GetProperty("input_ids").EnumerateArray().Select(e => e.Ints()).ToArray() : new[] { c.GetProperty("input_ids").Ints() };
            string? Lang(string one, string many) => c.TryGetProperty(batched ? many : one, out var v)
                ? batched ? v.EnumerateArray().Select(x => x.GetString()).Distinct().Single() : v.GetString()
                : null;
            var g = c.GetProperty("generation");
            var perInput = g.GetProperty("num_return_sequences").GetInt32();
            var eos = g.GetProperty("eos_token_id").GetInt32();
            var rows = c.GetProperty("sequences").EnumerateArray().Select(r =>
            {
                var all = r.Ints();
                var end = Array.IndexOf(all, eos, 1);
                return end < 0 ? all : all[..(end + 1)];
            }).ToArray();
            var scores = c.GetProperty("sequences_scores").EnumerateArray().Select(s => s.GetDouble()).ToArray();
            var outputs = c.GetProperty("outputs").EnumerateArray().Select(s => s.GetString()!).ToArray();
            cases.Add(new BeamCase
            {
                Name = c.GetProperty("name").GetString()!,
                Inputs = texts,
                InputIds = ids,
                SourceLanguage = Lang("src_lang", "src_langs"),
                TargetLanguage = Lang("tgt_lang", "tgt_langs"),
                Generation = g,
                FromGenerationConfig = c.GetProperty("settings_source").GetString() == "generation_config.json",
                Sequences = rows.Chunk(perInput).ToArray(),
                Scores = scores.Chunk(perInput).ToArray(),
                Outputs = outputs.Chunk(perInput).ToArray(),
            });
        }
        return new BeamFile(cases, root.GetProperty("score_tolerance").GetDouble());
    }
}
