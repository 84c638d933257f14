using System.Runtime.Intrinsics;

namespace TransformerInference.Modeling.Kernels;

/// <summary>Runs the norm and one-query attention kernels on the vector width chosen at load (as the packed
/// products do).</summary>
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
}
