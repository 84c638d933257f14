using TorchSharp;
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

    /// <summary>Attention heads of a seed checkpoint, which does not record them. Null (default): <c>"h"</c> of the
    /// <c>model_args.json</c> the seed's training scripts write beside the checkpoint, else 8 (the seed's default).
    /// A value that disagrees with that file's <c>"h"</c> is an error. Ignored for folders whose config.json names
    /// them.</summary>
    public int? Heads { get; init; }

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

    /// <summary>Checks the options before anything is loaded: a floating-point <see cref="DType"/>, a positive head
    /// count, and a device this process can use.</summary>
    /// <exception cref="ArgumentException">An option is out of range; the message and parameter name name it.</exception>
    /// <exception cref="NotSupportedException">CUDA was asked for but no CUDA device is available.</exception>
    public ModelLoadOptions Validate()
    {
        if (DType is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float64))
            throw new ArgumentException($"DType must be a floating-point type (Float32, BFloat16, Float16, Float64), got {DType}.", nameof(DType));
        if (Heads is < 1) throw new ArgumentException($"Heads must be positive, got {Heads}.", nameof(Heads));
        ArgumentNullException.ThrowIfNull(SpecialIds, nameof(SpecialIds));
        CheckDevice(Device);
        return this;
    }

    /// <summary>Throws <see cref="NotSupportedException"/> for a device LibTorch cannot use here (checked before any
    /// native call that would otherwise end in an untyped native error).</summary>
    internal static void CheckDevice(Device? device)
    {
        if (device is null || device.type == DeviceType.CPU) return;
        if (device.type != DeviceType.CUDA)
            throw new NotSupportedException($"Device {device} is not supported (CPU or CUDA).");
        if (!cuda.is_available())
            throw new NotSupportedException($"Device {device} was asked for, but CUDA is not available (no NVIDIA GPU, or a CPU-only LibTorch backend).");
        if (device.index >= cuda.device_count())
            throw new NotSupportedException($"Device {device} was asked for, but only {cuda.device_count()} CUDA device(s) exist.");
    }
}

/// <summary>Ids of the four special tokens.</summary>
/// <param name="Unk">Unknown word.</param>
/// <param name="Pad">Padding.</param>
/// <param name="Sos">Start of sequence.</param>
/// <param name="Eos">End of sequence.</param>
public sealed record SpecialTokenIds(int Unk = 0, int Pad = 1, int Sos = 2, int Eos = 3);
