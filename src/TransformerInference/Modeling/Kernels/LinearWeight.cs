using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace TransformerInference.Modeling.Kernels;

/// <summary>
/// One weight product <c>y = x·Wᵀ + b</c> (W is <c>[out, in]</c> as PyTorch stores it), prepared once at load in the
/// layout its kernel wants. Every linear layer of the graph goes through this type, so the kernel (LibTorch, our own
/// CPU kernels, quantized weights) is chosen in one place. It owns the weight and bias it was given.
/// </summary>
internal abstract class LinearWeight : IDisposable
{
    protected LinearWeight(long outFeatures, long inFeatures)
    {
        OutFeatures = outFeatures;
        InFeatures = inFeatures;
    }

    /// <summary>Rows of W: the width of the output.</summary>
    public long OutFeatures { get; }

    /// <summary>Columns of W: the width of the input.</summary>
    public long InFeatures { get; }

    /// <summary><c>x [..., in]</c> → <c>[..., out]</c>.</summary>
    public abstract Tensor Forward(Tensor x);

    /// <summary>Frees the weight (and whatever the kernel prepared from it).</summary>
    public abstract void Dispose();
}

/// <summary>LibTorch's own product (<c>F.linear</c>) on the weight as loaded: every CUDA product, and the reference
/// the other kernels are checked against.</summary>
internal sealed class TorchLinear : LinearWeight
{
    private readonly Tensor _weight;
    private readonly Tensor? _bias;

    public TorchLinear(Tensor weight, Tensor? bias) : base(weight.shape[0], weight.shape[1])
    {
        _weight = weight;
        _bias = bias;
    }

    public override Tensor Forward(Tensor x) => F.linear(x, _weight, _bias);

    public override void Dispose()
    {
        _weight.Dispose();
        _bias?.Dispose();
    }
}

/// <summary>Which kernel runs the weight products: set by tests and measurements (<see cref="Loading.ModelLoadOptions"/>
/// or the <c>TRANSFORMERINFERENCE_KERNEL</c> environment variable); <see cref="Auto"/> picks by device and CPU.</summary>
internal enum LinearKernel
{
    Auto,
    LibTorch,
    Avx512,
    Avx2,
    Portable,
}

/// <summary>Chooses, once per model load, how every weight product is prepared and run.</summary>
/// <param name="Cpu">Our kernel width, or null for LibTorch's product.</param>
/// <param name="Format">How our kernels store the weights.</param>
internal sealed record LinearKernels(CpuKernel? Cpu, PackedFormat Format)
{
    public const string EnvironmentVariable = "TRANSFORMERINFERENCE_KERNEL";

    /// <summary>LibTorch's product on the weights as loaded.</summary>
    public static LinearKernels LibTorch { get; } = new(null, PackedFormat.Float32);

    /// <summary>The kernels for a model on <paramref name="device"/> in <paramref name="dtype"/>.</summary>
    /// <exception cref="ArgumentException">The quantization or kernel cannot run there (our kernels are CPU float32 only).</exception>
    public static LinearKernels Choose(LinearKernel requested, WeightQuantization quantization, Device device, ScalarType dtype)
    {
        if (requested == LinearKernel.Auto)
        {
            var env = Environment.GetEnvironmentVariable(EnvironmentVariable);
            if (!string.IsNullOrEmpty(env) && !Enum.TryParse(env, ignoreCase: true, out requested))
                throw new ArgumentException($"{EnvironmentVariable}='{env}' is not one of auto, libtorch, avx512, avx2, portable.");
        }
        var ours = device.type == DeviceType.CPU && dtype == ScalarType.Float32;
        var format = quantization switch
        {
            WeightQuantization.None => PackedFormat.Float32,
            WeightQuantization.Int8 => PackedFormat.Int8,
            WeightQuantization.BFloat16 => PackedFormat.BFloat16,
            _ => throw new ArgumentException($"Unknown weight quantization {quantization}.", nameof(quantization)),
        };
        if (!ours)
        {
            if (format != PackedFormat.Float32)
                throw new ArgumentException($"{quantization} weights run on CPU float32 models only, not {dtype} on {device.type}.", nameof(quantization));
            if (requested is not (LinearKernel.Auto or LinearKernel.LibTorch))
                throw new ArgumentException($"The {requested} kernel runs on CPU float32 models only, not {dtype} on {device.type}.");
            return LibTorch;
        }
        CpuKernel? cpu = requested switch
        {
            LinearKernel.LibTorch => null,
            LinearKernel.Avx512 => CpuKernel.Avx512,
            LinearKernel.Avx2 => CpuKernel.Avx2,
            LinearKernel.Portable => CpuKernel.Portable,
            _ => Best(),
        };
        if (cpu is null && format != PackedFormat.Float32)
            throw new ArgumentException($"{quantization} weights need our CPU kernels; the LibTorch kernel was requested.", nameof(quantization));
        return new LinearKernels(cpu, format);
    }

    /// <summary>The widest of our kernels the CPU runs natively.</summary>
    public static CpuKernel Best() =>
        Vector512.IsHardwareAccelerated ? CpuKernel.Avx512
        : Avx2.IsSupported && Fma.IsSupported ? CpuKernel.Avx2
        : CpuKernel.Portable;

    public LinearWeight Create(Tensor weight, Tensor? bias) =>
        Cpu is { } kernel ? new PackedLinear(weight, bias, kernel, Format) : new TorchLinear(weight, bias);
}
