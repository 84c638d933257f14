using System.Numerics;
using System.Runtime.Intrinsics;

namespace TransformerInference.Modeling.Kernels;

/// <summary>Runs the norm and one-query attention kernels on the vector width chosen at load (as the packed
/// products do), and the raw decode step's element-wise operations (the same result at any width).</summary>
internal static unsafe class StepKernels
{
    /// <summary>See <see cref="NormKernel{TOps, TV}.Run"/>.</summary>
    public static void Norm(CpuKernel kernel, NormKind kind, float* x, float* residual, float* sum, float* y, long rows,
        int width, float eps, float* weight, float* bias)
    {
        switch (kernel)
        {
            case CpuKernel.Avx512: NormKernel<Avx512Ops, Vector512<float>>.Run(kind, x, residual, sum, y, rows, width, eps, weight, bias); break;
            case CpuKernel.Avx2: NormKernel<Avx2Ops, Vector256<float>>.Run(kind, x, residual, sum, y, rows, width, eps, weight, bias); break;
            default: NormKernel<PortableOps, Vector128<float>>.Run(kind, x, residual, sum, y, rows, width, eps, weight, bias); break;
        }
    }

    /// <summary>See <see cref="AttentionKernel{TOps, TV}.Run"/>.</summary>
    public static void Attention(CpuKernel kernel, in OneQueryAttention a)
    {
        switch (kernel)
        {
            case CpuKernel.Avx512: AttentionKernel<Avx512Ops, Vector512<float>>.Run(a); break;
            case CpuKernel.Avx2: AttentionKernel<Avx2Ops, Vector256<float>>.Run(a); break;
            default: AttentionKernel<PortableOps, Vector128<float>>.Run(a); break;
        }
    }

    /// <summary><c>h &lt; 0 ? 0 : h</c> in place, a vector at a time (no branch per element: a hidden row's signs are
    /// random, so a branch mispredicts half the time). NaN and −0 pass through unchanged, as in the scalar form.</summary>
    public static void Relu(float* h, long n)
    {
        long i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var zero = Vector<float>.Zero;
            for (; i + Vector<float>.Count <= n; i += Vector<float>.Count)
            {
                var v = Vector.Load(h + i);
                Vector.Store(Vector.ConditionalSelect(Vector.LessThan(v, zero), zero, v), h + i);
            }
        }
        for (; i < n; i++) h[i] = h[i] < 0 ? 0 : h[i];
    }

    /// <summary><c>x[i] += y[i]</c> (one rounding each, as a tensor add), a vector at a time.</summary>
    public static void AddInPlace(float* x, float* y, long n)
    {
        long i = 0;
        for (; i + Vector<float>.Count <= n; i += Vector<float>.Count) Vector.Store(Vector.Load(x + i) + Vector.Load(y + i), x + i);
        for (; i < n; i++) x[i] += y[i];
    }
}
