using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace TransformerInference.Modeling.Kernels;

/// <summary>The few vector operations the packed kernels need, for one vector width; a struct implementing it makes
/// the JIT compile one specialised copy of the kernels per width (no virtual calls in the inner loops).</summary>
internal unsafe interface IVectorOps<TV> where TV : struct
{
    /// <summary>Floats per vector.</summary>
    static abstract int Count { get; }
    static abstract TV Zero { get; }
    /// <summary>One float from memory in every lane.</summary>
    static abstract TV Broadcast(float* p);
    /// <summary><c>a·b + c</c>, fused (one rounding) in every path, so all widths give the same sums.</summary>
    static abstract TV MultiplyAdd(TV a, TV b, TV c);
    static abstract TV Multiply(TV a, TV b);
    static abstract TV Add(TV a, TV b);
    static abstract TV Load(float* p);
    /// <summary><see cref="Count"/> int8 values widened to float.</summary>
    static abstract TV LoadInt8(sbyte* p);
    /// <summary><c>2·Count</c> bfloat16 values stored in <see cref="Count"/> 32-bit words, widened to float (exact):
    /// the low halves of the words give <paramref name="lo"/> (a shift), the high halves <paramref name="hi"/> (a mask).
    /// Lane <c>j</c> of each comes from word <c>j</c>, so no shuffle crosses lanes.</summary>
    static abstract void LoadBFloat16Pair(uint* p, out TV lo, out TV hi);
    static abstract void Store(float* p, TV v);
    /// <summary>One value in every lane.</summary>
    static abstract TV Create(float value);
    static abstract TV Subtract(TV a, TV b);
    static abstract TV Divide(TV a, TV b);
    /// <summary>The sum of the lanes.</summary>
    static abstract float Sum(TV v);
    /// <summary><c>e^x</c> in every lane (.NET's vector exp, within an ulp or two of <see cref="MathF.Exp"/>).</summary>
    static abstract TV Exp(TV v);
}

/// <summary>512-bit vectors (AVX-512 where present). Written with the cross-platform <see cref="Vector512"/> API so
/// the path also runs (emulated, slowly) where AVX-512 is missing: tests check it on any machine.</summary>
internal readonly unsafe struct Avx512Ops : IVectorOps<Vector512<float>>
{
    public static int Count => Vector512<float>.Count;
    public static Vector512<float> Zero => Vector512<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Broadcast(float* p) => Vector512.Create(*p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> MultiplyAdd(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Vector512.FusedMultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Multiply(Vector512<float> a, Vector512<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load(float* p) => Vector512.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> LoadInt8(sbyte* p) =>
        Avx512F.IsSupported
            ? Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(p)))
            : Vector512.Create(Avx2Ops.Widen(Vector128.Load(p)), Avx2Ops.Widen(Vector128.Load(p + 8)));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadBFloat16Pair(uint* p, out Vector512<float> lo, out Vector512<float> hi)
    {
        var v = Vector512.Load(p);
        lo = Vector512.ShiftLeft(v, 16).AsSingle();
        hi = (v & Vector512.Create(0xFFFF0000u)).AsSingle();
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(float* p, Vector512<float> v) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Create(float value) => Vector512.Create(value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Subtract(Vector512<float> a, Vector512<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Divide(Vector512<float> a, Vector512<float> b) => a / b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector512<float> v) => Vector512.Sum(v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp(Vector512<float> v) => Vector512.Exp(v);
}

/// <summary>256-bit vectors, chosen where AVX2 and FMA are present.</summary>
internal readonly unsafe struct Avx2Ops : IVectorOps<Vector256<float>>
{
    public static int Count => Vector256<float>.Count;
    public static Vector256<float> Zero => Vector256<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Broadcast(float* p) => Vector256.Create(*p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> MultiplyAdd(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Vector256.FusedMultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Multiply(Vector256<float> a, Vector256<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load(float* p) => Vector256.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> LoadInt8(sbyte* p) =>
        Avx2.IsSupported ? Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(p)) : Widen(Vector128.Load(p));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadBFloat16Pair(uint* p, out Vector256<float> lo, out Vector256<float> hi)
    {
        var v = Vector256.Load(p);
        lo = Vector256.ShiftLeft(v, 16).AsSingle();
        hi = (v & Vector256.Create(0xFFFF0000u)).AsSingle();
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(float* p, Vector256<float> v) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Create(float value) => Vector256.Create(value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Subtract(Vector256<float> a, Vector256<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Divide(Vector256<float> a, Vector256<float> b) => a / b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector256<float> v) => Vector256.Sum(v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Exp(Vector256<float> v) => Vector256.Exp(v);

    /// <summary>The low 8 int8 values of <paramref name="v"/> as floats (cross-platform form).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Widen(Vector128<sbyte> v) =>
        Vector256.ConvertToSingle(Vector256.WidenLower(Vector128.WidenLower(v).ToVector256Unsafe()));
}

/// <summary>128-bit vectors through the cross-platform API: SSE on any x64, NEON on Arm64, emulated elsewhere.</summary>
internal readonly unsafe struct PortableOps : IVectorOps<Vector128<float>>
{
    public static int Count => Vector128<float>.Count;
    public static Vector128<float> Zero => Vector128<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Broadcast(float* p) => Vector128.Create(*p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> MultiplyAdd(Vector128<float> a, Vector128<float> b, Vector128<float> c) => Vector128.FusedMultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Multiply(Vector128<float> a, Vector128<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Add(Vector128<float> a, Vector128<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Load(float* p) => Vector128.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> LoadInt8(sbyte* p) =>
        Vector128.ConvertToSingle(Vector128.WidenLower(Vector128.WidenLower(Vector128.CreateScalar(*(int*)p).AsSByte())));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadBFloat16Pair(uint* p, out Vector128<float> lo, out Vector128<float> hi)
    {
        var v = Vector128.Load(p);
        lo = Vector128.ShiftLeft(v, 16).AsSingle();
        hi = (v & Vector128.Create(0xFFFF0000u)).AsSingle();
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(float* p, Vector128<float> v) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Create(float value) => Vector128.Create(value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Subtract(Vector128<float> a, Vector128<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Divide(Vector128<float> a, Vector128<float> b) => a / b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector128<float> v) => Vector128.Sum(v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Exp(Vector128<float> v) => Vector128.Exp(v);
}
