using static TorchSharp.torch;

namespace TransformerInference.Loading;

/// <summary>Where and how a model is loaded.</summary>
public sealed record ModelLoadOptions
{
    /// <summary>Device for the weights and every computation (default: CPU). Use <c>torch.CUDA</c> with the CUDA backend.</summary>
    public Device? Device { get; init; }

    /// <summary>Floating-point type of weights and activations (default float32). bfloat16 is fast on recent CPUs and
    /// GPUs; float16 is for GPUs only (it is very slow on CPUs).</summary>
    public ScalarType DType { get; init; } = ScalarType.Float32;

    /// <summary>Attention heads of a seed checkpoint, which does not record them (default 8, as the seed).
    /// Ignored for folders whose config.json names them.</summary>
    public int Heads { get; init; } = 8;

    /// <summary>Special token ids of a seed checkpoint (default <c>[UNK]</c>=0, <c>[PAD]</c>=1, <c>[SOS]</c>=2,
    /// <c>[EOS]</c>=3, as the seed's tokenizers). Ignored for folders whose config.json names them.</summary>
    public SpecialTokenIds SpecialIds { get; init; } = new();

    /// <summary>Storage of the linear-layer weights (default <see cref="WeightQuantization.None"/>): int8 or bfloat16
    /// weights are made at load from the float checkpoint and run by our CPU kernels (CPU float32 models only).</summary>
    public WeightQuantization Quantization { get; init; }

    /// <summary>The kernel of the weight products (default: chosen by device and CPU features). For tests and
    /// measurements.</summary>
    internal Modeling.Kernels.LinearKernel Kernel { get; init; }

    /// <summary>Run the parallel block with fused products (default). False keeps separate products; for tests.</summary>
    internal bool FuseParallel { get; init; } = true;
}

/// <summary>Ids of the four special tokens.</summary>
/// <param name="Unk">Unknown word.</param>
/// <param name="Pad">Padding.</param>
/// <param name="Sos">Start of sequence.</param>
/// <param name="Eos">End of sequence.</param>
public sealed record SpecialTokenIds(int Unk = 0, int Pad = 1, int Sos = 2, int Eos = 3);
