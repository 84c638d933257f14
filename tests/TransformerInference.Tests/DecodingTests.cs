using System.Text.Json;
using TransformerInference.Decoding;
using TransformerInference.Modeling;
using Xunit;

namespace TransformerInference.Tests;

/// <summary>Search strategies against greedy and against each other.</summary>
public class DecodingTests : IDisposable
{
    private readonly TransformerModel _model = SeedParityTests.Load("seed-tiny");
    private readonly IReadOnlyList<int>[] _sources;

    public DecodingTests()
    {
        _sources = Fixtures.Json("seed-tiny", "expected.json").GetProperty("sentences").EnumerateArray()
            .Where(s => s.GetProperty("output_ids").ValueKind == JsonValueKind.Array)
            .Select(s => (IReadOnlyList<int>)new[] { 2 }.Concat(s.GetProperty("src_ids").Ints()).Append(3).ToArray())
            .Take(12).ToArray();
    }

    public void Dispose() => _model.Dispose();

    [Fact]
    public void BeamOfOneEqualsGreedy()
    {
        var greedy = Generator.Generate(_model, _sources);
        for (var i = 0; i < _sources.Length; i++)
        {
            // The beam code path itself at width 1 (Generate sends BeamSize 1 to the greedy loop).
            using var search = new BeamSearch(_model, 1, new DecodingOptions { LengthPenalty = 0 }, _model.MaxTargetLength - 1);
            var beam = Generator.Run(_model, new[] { _sources[i] }, search, default)[0][0];
            Assert.Equal(greedy[i][0].Ids, beam.Ids);
            Assert.Equal(greedy[i][0].LogProbability, beam.LogProbability, 3);
        }
    }

    [Fact]
    public void BeamScoreIsNeverBelowGreedyAndNBestIsSorted()
    {
        foreach (var source in _sources)
        {
            var greedy = Generator.Generate(_model, new[] { source })[0][0];
            var beams = Generator.Generate(_model, new[] { source }, new DecodingOptions { BeamSize = 4, NBest = 4, LengthPenalty = 0 })[0];
            Assert.True(beams[0].LogProbability >= greedy.LogProbability - 1e-4,
                $"beam {beams[0].LogProbability} < greedy {greedy.LogProbability}");
            Assert.Equal(beams.OrderByDescending(h => h.Score).Select(h => h.Score), beams.Select(h => h.Score));
            Assert.True(beams.Count > 1);
            Assert.All(beams, h => Assert.True(h.LogProbability <= 0));
        }
    }

    [Fact]
    public void BatchedBeamsEqualOneInputAtATime()
    {
        var options = new DecodingOptions { BeamSize = 3, NBest = 3 };
        var together = Generator.Generate(_model, _sources, options);
        for (var i = 0; i < _sources.Length; i++)
        {
            var alone = Generator.Generate(_model, new[] { _sources[i] }, options)[0];
            Assert.Equal(alone.Select(h => h.Ids), together[i].Select(h => h.Ids));
            Assert.Equal(alone.Select(h => Math.Round(h.Score, 3)), together[i].Select(h => Math.Round(h.Score, 3)));
        }
    }

    [Fact]
    public void SamplingIsReproducibleWithASeedAndTopKOneIsGreedy()
    {
        var greedy = Generator.Generate(_model, _sources);
        var topOne = Generator.Generate(_model, _sources, new DecodingOptions { Sample = true, TopK = 1, Seed = 7 });
        for (var i = 0; i < _sources.Length; i++) Assert.Equal(greedy[i][0].Ids, topOne[i][0].Ids);

        var hot = new DecodingOptions { Sample = true, Temperature = 3.0, Seed = 42 };
        var a = Generator.Generate(_model, _sources, hot);
        var b = Generator.Generate(_model, _sources, hot);
        Assert.Equal(a.Select(r => r[0].Ids), b.Select(r => r[0].Ids));
        var c = Generator.Generate(_model, _sources, hot with { Seed = 43 });
        Assert.NotEqual(a.Select(r => string.Join(",", r[0].Ids)), c.Select(r => string.Join(",", r[0].Ids)));
        // A seeded sample of an input does not depend on what shares its batch.
        var alone = Generator.Generate(_model, new[] { _sources[5] }, hot)[0][0].Ids;
        Assert.Equal(a[5][0].Ids, alone);
        // At a high temperature sampling leaves the greedy path somewhere.
        Assert.Contains(Enumerable.Range(0, _sources.Length), i => !a[i][0].Ids.SequenceEqual(greedy[i][0].Ids));
    }

    [Fact]
    public void SamplerFiltersFollowTopKTopPAndTemperature()
    {
        // Probabilities 0.5, 0.25, 0.15, 0.1 on tokens 3, 0, 2, 1.
        using var logProbs = TorchSharp.torch.tensor(new[] { 0.25f, 0.1f, 0.15f, 0.5f }).log().unsqueeze(0);
        var inputs = new[] { 0 };
        IReadOnlyList<int>[] source = { new[] { 2, 3 } };
        int[] Draw(DecodingOptions o)
        {
            var sampler = new Sampler(o with { Sample = true, Seed = 11 }, source);
            return Enumerable.Range(0, 400).Select(_ => (int)sampler.Choose(logProbs, inputs)[0]).ToArray();
        }
        Assert.Equal(new[] { 0, 3 }, Draw(new DecodingOptions { TopK = 2 }).Distinct().Order());
        Assert.Equal(new[] { 3 }, Draw(new DecodingOptions { TopP = 0.5 }).Distinct());
        Assert.Equal(new[] { 0, 3 }, Draw(new DecodingOptions { TopP = 0.7 }).Distinct().Order());
        Assert.Equal(new[] { 3 }, Draw(new DecodingOptions { Temperature = 0.01 }).Distinct());
        var free = Draw(new DecodingOptions());
        Assert.Equal(new[] { 0, 1, 2, 3 }, free.Distinct().Order());
        Assert.InRange(free.Count(t => t == 3) / 400.0, 0.4, 0.6);
    }

    [Fact]
    public void LengthControlsAndIgnoreEos()
    {
        var fixedLength = Generator.Generate(_model, _sources.Take(2).ToArray(), new DecodingOptions { MaxNewTokens = 12, IgnoreEos = true });
        Assert.All(fixedLength, r => Assert.Equal(12, r[0].Ids.Count));
        var capped = Generator.Generate(_model, _sources.Take(2).ToArray(), new DecodingOptions { MaxNewTokens = 2 });
        Assert.All(capped, r => { Assert.Equal(2, r[0].Ids.Count); Assert.False(r[0].Finished); });
        var empty = new IReadOnlyList<int>[] { new[] { 2, 3 } }; // the model answers the empty input with [EOS] at once
        Assert.Empty(Generator.Generate(_model, empty)[0][0].Ids);
        Assert.Equal(3, Generator.Generate(_model, empty, new DecodingOptions { MinNewTokens = 3 })[0][0].Ids.Count);
        Assert.Throws<ArgumentException>(() => Generator.Generate(_model, empty, new DecodingOptions { MaxNewTokens = 41 }));
        Assert.Throws<ArgumentException>(() => Generator.Generate(_model, empty, new DecodingOptions { TopP = 0 }));
    }

    [Fact]
    public void NoRepeatNgramAndRepetitionPenaltyChangeRepetitiveOutput()
    {
        var options = new DecodingOptions { MaxNewTokens = 20, IgnoreEos = true };
        var plain = Generator.Generate(_model, _sources.Take(3).ToArray(), options);
        var noRepeat = Generator.Generate(_model, _sources.Take(3).ToArray(), options with { NoRepeatNgramSize = 2 });
        foreach (var r in noRepeat)
        {
            var ids = r[0].Ids;
            var bigrams = Enumerable.Range(0, ids.Count - 1).Select(i => (ids[i], ids[i + 1])).ToList();
            Assert.Equal(bigrams.Count, bigrams.Distinct().Count());
        }
        var penalised = Generator.Generate(_model, _sources.Take(3).ToArray(), options with { RepetitionPenalty = 5.0 });
        Assert.True(penalised.Zip(plain).Count(p => p.First[0].Ids.Distinct().Count() >= p.Second[0].Ids.Distinct().Count()) == 3);
        Assert.Equal(new[] { 5 }, LogitsProcessing.BannedByNgrams(new[] { 4, 5, 6, 4 }, 2));
    }
}
