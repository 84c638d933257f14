using System.Text.Json;
using TransformerInference.Decoding;
using Xunit;

namespace TransformerInference.Tests;

/// <summary>The translator under concurrent callers, and the dtype option.</summary>
public class ConcurrencyAndPrecisionTests
{
    private static (string Src, string Text, int[] Ids, double Margin)[] Expected(string fixture) =>
        Fixtures.Json(fixture, "expected.json").GetProperty("sentences").EnumerateArray()
            .Where(s => s.GetProperty("output_ids").ValueKind == JsonValueKind.Array)
            .Select(s => (s.GetProperty("src").GetString()!, s.GetProperty("output_text").GetString()!,
                s.GetProperty("output_ids").Ints(), s.GetProperty("min_top2_logit_margin").GetDouble()))
            .ToArray();

    [Fact]
    public async Task ConcurrentCallersGetTheirOwnTranslations()
    {
        using var translator = TranslatorTests.Open("seed-tiny");
        var cases = Expected("seed-tiny").Take(12).ToArray();
        var tasks = Enumerable.Range(0, 4).Select(worker => Task.Run(async () =>
        {
            for (var round = 0; round < 3; round++)
            {
                foreach (var (src, text, _, _) in cases.Skip(worker).Concat(cases.Take(worker)))
                {
                    Assert.Equal(text, worker % 2 == 0 ? translator.Translate(src) : await translator.TranslateAsync(src));
                }
            }
        })).ToArray();
        await Task.WhenAll(tasks);
    }

    [Fact]
    public void BFloat16GivesTheSameGreedyIdsWhereTheReferenceMarginIsWide()
    {
        using var bf16 = TranslatorTests.Open("seed-tiny", new TranslatorOptions { DType = TorchSharp.torch.ScalarType.BFloat16 });
        Assert.Equal(TorchSharp.torch.ScalarType.BFloat16, bf16.Model.DType);
        var wide = Expected("seed-tiny").Where(c => c.Margin > 1.0).ToArray();
        Assert.True(wide.Length > 20);
        foreach (var (src, _, ids, _) in wide)
            Assert.Equal(ids.Skip(1).Take(ids.Length - 2), bf16.TranslateDetailed(new[] { src })[0].Ids);
    }
}
