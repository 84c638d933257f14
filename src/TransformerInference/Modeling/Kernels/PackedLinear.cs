using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace TransformerInference.Modeling.Kernels;

/// <summary>Which of our CPU kernels runs a packed product (the vector width it is compiled for).</summary>
internal enum CpuKernel
{
    /// <summary>512-bit vectors (AVX-512).</summary>
    Avx512,
    /// <summary>256-bit vectors (AVX2 + FMA).</summary>
    Avx2,
    /// <summary>128-bit vectors through the cross-platform API (any CPU).</summary>
    Portable,
}

/// <summary>How a packed product stores its weights.</summary>
internal enum PackedFormat
{
    Float32,
    /// <summary>Symmetric per-output-channel int8: <c>W[n, k] ≈ scale[n] · q[n, k]</c>, <c>q ∈ [-127, 127]</c>, multiplied
    /// as integers (<see cref="Int8PairWeights"/>) against each row's activations rounded to int16 (<see cref="Int8PairWeights.QuantizeRows"/>).</summary>
    Int8,
    /// <summary>bfloat16 (round to nearest even), widened to float in registers.</summary>
    BFloat16,
}

/// <summary>
/// A weight product on CPU float32 activations run by our own kernels (<see cref="PackedKernel{TOps, TV, TFormat}"/>):
/// the weight is copied at load into panels in native memory (float32, int8 or bfloat16) and the tensor is freed.
/// </summary>
internal sealed unsafe class PackedLinear : LinearWeight
{
    private readonly CpuKernel _kernel;
    private readonly PackedFormat _format;
    private readonly int _n, _k;
    /// <summary>Integer formats: <c>k</c> steps of the kernel (pairs of inputs) and the activations' int16 limit.</summary>
    private readonly int _pairs, _limit;
    private byte* _weights;
    private float* _scale, _bias;

    public PackedLinear(Tensor weight, Tensor? bias, CpuKernel kernel, PackedFormat format) : base(weight.shape[0], weight.shape[1])
    {
        if (OutFeatures > int.MaxValue || InFeatures > int.MaxValue) throw new ArgumentException("The weight is too large for the packed kernels.");
        _kernel = kernel;
        _format = format;
        _n = (int)OutFeatures;
        _k = (int)InFeatures;
        var width = PanelWidth(kernel);
        var padded = (long)(_n + width - 1) / width * width;
        var size = format switch { PackedFormat.Int8 => 1, PackedFormat.BFloat16 => 2, _ => 4 };
        _pairs = (_k + 1) / 2;
        _limit = Int8PairWeights.ActivationLimit(_k);
        var stored = format == PackedFormat.Int8 ? 2L * _pairs : _k; // int8 pairs: an odd k gets a zero weight
        try
        {
            _weights = (byte*)NativeMemory.AlignedAlloc((nuint)(padded * stored * size), 64);
            NativeMemory.Clear(_weights, (nuint)(padded * stored * size));
            if (format == PackedFormat.Int8) _scale = Floats(padded);
            using var scope = NewDisposeScope(); // the float32 contiguous copies
            Pack((float*)Pointer(weight.to(ScalarType.Float32, CPU).contiguous()), width);
            if (bias is not null)
            {
                _bias = Floats(padded);
                var b = bias.to(ScalarType.Float32, CPU).contiguous();
                new ReadOnlySpan<float>((void*)Pointer(b), _n).CopyTo(new Span<float>(_bias, _n));
            }
        }
        catch
        {
            Free();
            throw;
        }
        weight.Dispose();
        bias?.Dispose();
    }

    /// <summary>Output columns per packed panel: two vectors.</summary>
    public static int PanelWidth(CpuKernel kernel) => 2 * kernel switch
    {
        CpuKernel.Avx512 => Vector512<float>.Count,
        CpuKernel.Avx2 => Vector256<float>.Count,
        _ => Vector128<float>.Count,
    };

    private static float* Floats(long count)
    {
        var p = (float*)NativeMemory.AlignedAlloc((nuint)(count * sizeof(float)), 64);
        NativeMemory.Clear(p, (nuint)(count * sizeof(float)));
        return p;
    }

    /// <summary>The address of a contiguous CPU tensor's first element.</summary>
    internal static IntPtr Pointer(Tensor t)
    {
        // Tensor.bytes spans the whole tensor and refuses more than int.MaxValue bytes (a large KV cache or embedding
        // table): a one-element view of the first element has the same address.
        if (t.NumberOfElements * t.ElementSize <= int.MaxValue)
        {
            fixed (byte* p = t.bytes) return (IntPtr)p;
        }
        using var first = t.reshape(-1).narrow(0, 0, 1);
        fixed (byte* p = first.bytes) return (IntPtr)p;
    }

    private void Pack(float* w, int width)
    {
        for (var n = 0; n < _n; n++)
        {
            var row = w + (long)n * _k;
            var panel = n / width;
            var j = n % width;
            var index = (long)panel * _k * width + j; // element of (n, k = 0); k advances by width
            switch (_format)
            {
                case PackedFormat.Float32:
                    var f = (float*)_weights;
                    for (var k = 0; k < _k; k++) f[index + (long)k * width] = row[k];
                    break;
                case PackedFormat.BFloat16:
                    var h = (ushort*)_weights + (long)panel * _k * width;
                    for (var k = 0; k < _k; k++) h[BFloat16Weights.Index(k, j, width)] = ToBFloat16(row[k]);
                    break;
                default:
                    // int8: symmetric per output channel, max|w| / 127, half to even; a zero channel stays zero.
                    var max = 0f;
                    for (var k = 0; k < _k; k++) max = Math.Max(max, Math.Abs(row[k]));
                    var scale = max / 127f;
                    _scale[n] = scale;
                    var inverse = scale == 0 ? 0 : 1 / scale;
                    var q = (sbyte*)_weights + (long)panel * 2 * _pairs * width;
                    for (var k = 0; k < _k; k++)
                        q[Int8PairWeights.Index(k, j, width)] = (sbyte)Math.Clamp(MathF.Round(row[k] * inverse, MidpointRounding.ToEven), -127, 127);
                    break;
            }
        }
    }

    /// <summary>float → bfloat16, rounding to nearest even (NaN stays NaN).</summary>
    internal static ushort ToBFloat16(float value)
    {
        var bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x40);
        return (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
    }

    public override Tensor Forward(Tensor x)
    {
        if (x.device_type != DeviceType.CPU || x.dtype != ScalarType.Float32)
            throw new ArgumentException($"The packed CPU kernels take float32 CPU inputs, got {x.dtype} on {x.device}.", nameof(x));
        if (x.shape[^1] != _k) throw new ArgumentException($"Expected a last dimension of {_k}, got [{string.Join(", ", x.shape)}].", nameof(x));
        var shape = x.shape;
        shape[^1] = _n;
        var y = empty(shape, ScalarType.Float32);
        var m = x.numel() / _k;
        if (m == 0) return y;
        using var xc = x.contiguous();
        Run((float*)Pointer(xc), (float*)Pointer(y), m);
        return y;
    }

    /// <summary>The product on raw rows (<c>m × in</c> → <c>m × out</c>); split by output panels over LibTorch's
    /// thread count when the product is large enough to pay for it. Integer int8 products first round each row to
    /// int16 (<see cref="Int8PairWeights.QuantizeRows"/>), once for all panels.</summary>
    internal void Run(float* x, float* y, long m)
    {
        if (_format != PackedFormat.Int8)
        {
            Run(x, null, y, m);
            return;
        }
        // Up to QuantizedRows rows at a time: their int16 pairs, then one scale per row (a bounded buffer that stays in
        // cache however many rows an encoder brings).
        var chunk = (int)Math.Min(m, QuantizedRows);
        var rented = System.Buffers.ArrayPool<float>.Shared.Rent(checked(chunk * (_pairs + 1)));
        try
        {
            fixed (float* buffer = rented)
            {
                var rowScale = buffer + (long)chunk * _pairs;
                for (long r = 0; r < m; r += chunk)
                {
                    var rows = Math.Min(chunk, m - r);
                    Int8PairWeights.QuantizeRows(x + r * _k, rows, _k, _limit, (short*)buffer, 2 * _pairs, rowScale);
                    Run(buffer, rowScale, y + r * _n, rows);
                }
            }
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(rented);
        }
    }

    /// <summary>Rows an integer product quantizes and runs at a time.</summary>
    internal const int QuantizedRows = 256;

    private void Run(float* x, float* rowScale, float* y, long m)
    {
        var panels = (_n + PanelWidth(_kernel) - 1) / PanelWidth(_kernel);
        var threads = Math.Min(get_num_threads(), panels);
        if (threads <= 1 || m * _n * _k < 1 << 21)
        {
            Run(x, rowScale, y, m, 0, panels);
            return;
        }
        var (xp, sp, yp) = ((IntPtr)x, (IntPtr)rowScale, (IntPtr)y);
        Parallel.For(0, threads, t => Run((float*)xp, (float*)sp, (float*)yp, m, panels * t / threads, panels * (t + 1) / threads));
    }

    private void Run(float* x, float* rowScale, float* y, long m, int first, int end)
    {
        switch (_kernel, _format)
        {
            case (CpuKernel.Avx512, PackedFormat.Float32): PackedKernel<Avx512Ops, Vector512<float>, Float32Weights>.Run(x, null, y, m, _k, _n, _weights, _scale, _bias, first, end); break;
            case (CpuKernel.Avx512, PackedFormat.Int8): PackedKernel<Avx512Ops, Vector512<float>, Int8PairWeights>.Run(x, rowScale, y, m, _pairs, _n, _weights, _scale, _bias, first, end); break;
            case (CpuKernel.Avx512, _): PackedKernel<Avx512Ops, Vector512<float>, BFloat16Weights>.Run(x, null, y, m, _k, _n, _weights, _scale, _bias, first, end); break;
            case (CpuKernel.Avx2, PackedFormat.Float32): PackedKernel<Avx2Ops, Vector256<float>, Float32Weights>.Run(x, null, y, m, _k, _n, _weights, _scale, _bias, first, end); break;
            case (CpuKernel.Avx2, PackedFormat.Int8): PackedKernel<Avx2Ops, Vector256<float>, Int8PairWeights>.Run(x, rowScale, y, m, _pairs, _n, _weights, _scale, _bias, first, end); break;
            case (CpuKernel.Avx2, _): PackedKernel<Avx2Ops, Vector256<float>, BFloat16Weights>.Run(x, null, y, m, _k, _n, _weights, _scale, _bias, first, end); break;
            case (_, PackedFormat.Float32): PackedKernel<PortableOps, Vector128<float>, Float32Weights>.Run(x, null, y, m, _k, _n, _weights, _scale, _bias, first, end); break;
            case (_, PackedFormat.Int8): PackedKernel<PortableOps, Vector128<float>, Int8PairWeights>.Run(x, rowScale, y, m, _pairs, _n, _weights, _scale, _bias, first, end); break;
            default: PackedKernel<PortableOps, Vector128<float>, BFloat16Weights>.Run(x, null, y, m, _k, _n, _weights, _scale, _bias, first, end); break;
        }
    }

    private void Free()
    {
        NativeMemory.AlignedFree(_weights);
        NativeMemory.AlignedFree(_scale);
        NativeMemory.AlignedFree(_bias);
        _weights = null;
        _scale = null;
        _bias = null;
    }

    public override void Dispose()
    {
        Free();
        GC.SuppressFinalize(this);
    }

    ~PackedLinear() => Free();
}
