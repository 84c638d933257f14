using TorchSharp;
using Xunit;

namespace TransformerInference.Tests;

public class NativeLoadTests
{
    [Fact]
    public void TensorOpRunsOnThisHost()
    {
        using var a = torch.arange(6, dtype: torch.float32).reshape(2, 3);
        using var b = a.matmul(a.t());
        Assert.Equal(new long[] { 2, 2 }, b.shape);
        Assert.Equal(50f, b[1, 1].item<float>()); // 3*3 + 4*4 + 5*5
    }
}
