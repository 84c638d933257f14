using TorchSharp;
using TransformerInference.Modeling;
using Xunit;

namespace TransformerInference.Tests;

/// <summary>Shapes and masks, checked by hand.</summary>
public class ModelingTests
{
    [Fact]
    public void MasksMatchAHandCheckedExample()
    {
        using var ids = torch.tensor(new long[] { 2, 7, 3, 1, 1, 2, 3, 1, 1, 1 }, new long[] { 2, 5 });
        using var mask = Masks.SourceKeyMask(ids, padId: 1);
        Assert.Equal(new long[] { 2, 1, 1, 5 }, mask.shape);
        Assert.Equal(new[] { true, true, true, false, false, true, true, false, false, false }, mask.flatten().data<bool>().ToArray());

        using var causal = Masks.Causal(3);
        Assert.Equal(new long[] { 1, 1, 3, 3 }, causal.shape);
        Assert.Equal(new[] { true, false, false, true, true, false, true, true, true }, causal.flatten().data<bool>().ToArray());

        // Two new queries after two cached positions see keys 0..2 and 0..3.
        using var shifted = Masks.Causal(2, offset: 2);
        Assert.Equal(new[] { true, true, true, false, true, true, true, true }, shifted.flatten().data<bool>().ToArray());
    }

    [Fact]
    public void ModuleShapesFollowTheConfig()
    {
        using var model = SeedParityTests.Load("seed-tiny");
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        var src = torch.tensor(new long[] { 2, 31, 25, 3, 1, 2, 9, 8, 14, 3 }, new long[] { 2, 5 });
        var mask = Masks.SourceKeyMask(src, 1);
        var memory = model.Encode(src, mask);
        Assert.Equal(new long[] { 2, 5, 64 }, memory.shape);
        var tgt = torch.tensor(new long[] { 2, 26, 28, 2, 27, 25 }, new long[] { 2, 3 });
        var hidden = model.Decode(memory, mask, tgt, Masks.Causal(3));
        Assert.Equal(new long[] { 2, 3, 64 }, hidden.shape);
        Assert.Equal(new long[] { 2, 3, 69 }, model.Project(hidden).shape);
        Assert.Throws<ArgumentException>(() => model.Encode(torch.zeros(1, 41, torch.int64), torch.ones(1, 1, 1, 41, torch.@bool)));
    }

    [Fact]
    public void PaddingDoesNotChangeTheEncoderOutputOfRealPositions()
    {
        using var model = SeedParityTests.Load("seed-tiny");
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        var plain = torch.tensor(new long[] { 2, 31, 25, 3 }, new long[] { 1, 4 });
        var padded = torch.tensor(new long[] { 2, 31, 25, 3, 1, 1, 1 }, new long[] { 1, 7 });
        var a = model.Encode(plain, Masks.SourceKeyMask(plain, 1));
        var b = model.Encode(padded, Masks.SourceKeyMask(padded, 1)).narrow(1, 0, 4);
        Assert.True(a.allclose(b, rtol: 0, atol: 1e-5));
    }
}
