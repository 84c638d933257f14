using Xunit;

namespace TransformerInference.Tests;

/// <summary>Tests that change LibTorch's process-wide thread count run alone (after the parallel ones): a thread
/// count changed under a parallel test changes LibTorch's summation order and so the last bits of its logits, which
/// made the 1e-4 parity checks flaky.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class LibTorchThreadsCollection
{
    /// <summary>The collection's name.</summary>
    public const string Name = "LibTorch threads";
}
