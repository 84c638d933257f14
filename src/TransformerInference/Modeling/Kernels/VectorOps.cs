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
    /// <summary>Vector registers the JIT can keep values in on this path (the twelve-row product pass needs 27).</summary>
    static abstract int Registers { get; }
    static abstract TV Zero { get; }
    /// <summary>One float from memory in every lane.</summary>
    static abstract TV Broadcast(float* p);
    /// <summary><c>a·b + c</c>, fused (one rounding) in every path, so all widths give the same sums.</summary>
    static abstract TV MultiplyAdd(TV a, TV b, TV c);
    static abstract TV Multiply(TV a, TV b);
    static abstract TV Add(TV a, TV b);
    static abstract TV Load(float* p);
    /// <summary><c>2·Count</c> bfloat16 values stored in <see cref="Count"/> 32-bit words, widened to float (exact):
    /// the low halves of the words give <paramref name="lo"/> (a shift), the high halves <paramref name="hi"/> (a mask).
    /// Lane <c>j</c> of each comes from word <c>j</c>, so no shuffle crosses lanes.</summary>
    static abstract void LoadBFloat16Pair(uint* p, out TV lo, out TV hi);
    /// <summary><c>2·Count</c> int8 values sign-extended to int16 (the vector's bits as <c>2·Count</c> int16 lanes).</summary>
    static abstract TV LoadInt8AsInt16(sbyte* p);
    /// <summary>Integer dot products of int16 pairs, exact: in every 32-bit lane, <paramref name="acc"/> (an int32) plus
    /// the products of the lane's two int16 halves of <paramref name="a"/> and <paramref name="b"/> (<c>vpmaddwd</c> +
    /// <c>vpaddd</c>). The caller keeps every sum within int32.</summary>
    static abstract TV MultiplyAddPairs(TV a, TV b, TV acc);
    /// <summary>The vector's bits as int32 lanes, converted to float (round to nearest even).</summary>
    static abstract TV Int32ToSingle(TV v);
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
    /// <summary>zmm0-31 (where AVX-512 is native; emulated, the count only affects speed).</summary>
    public static int Registers => 32;
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
    public static void LoadBFloat16Pair(uint* p, out Vector512<float> lo, out Vector512<float> hi)
    {
        var v = Vector512.Load(p);
        lo = Vector512.ShiftLeft(v, 16).AsSingle();
        hi = (v & Vector512.Create(0xFFFF0000u)).AsSingle();
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> LoadInt8AsInt16(sbyte* p) =>
        Avx512BW.IsSupported
            ? Avx512BW.ConvertToVector512Int16(Vector256.Load(p)).AsSingle()
            : Vector512.Create(Vector256.WidenLower(Vector128.Load(p).ToVector256Unsafe()), Vector256.WidenLower(Vector128.Load(p + 16).ToVector256Unsafe())).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> MultiplyAddPairs(Vector512<float> a, Vector512<float> b, Vector512<float> acc)
    {
        if (Avx512BW.IsSupported) return (Avx512BW.MultiplyAddAdjacent(a.AsInt16(), b.AsInt16()) + acc.AsInt32()).AsSingle();
        // Without AVX-512BW: the two 256-bit halves (exact integer sums, so the same bits).
        return Vector512.Create(Avx2Ops.MultiplyAddPairs(a.GetLower(), b.GetLower(), acc.GetLower()),
            Avx2Ops.MultiplyAddPairs(a.GetUpper(), b.GetUpper(), acc.GetUpper()));
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Int32ToSingle(Vector512<float> v) => Vector512.ConvertToSingle(v.AsInt32());
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
    public static int Registers => 16;
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
    public static void LoadBFloat16Pair(uint* p, out Vector256<float> lo, out Vector256<float> hi)
    {
        var v = Vector256.Load(p);
        lo = Vector256.ShiftLeft(v, 16).AsSingle();
        hi = (v & Vector256.Create(0xFFFF0000u)).AsSingle();
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> LoadInt8AsInt16(sbyte* p) =>
        Avx2.IsSupported ? Avx2.ConvertToVector256Int16(p).AsSingle() : Vector256.WidenLower(Vector128.Load(p).ToVector256Unsafe()).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> MultiplyAddPairs(Vector256<float> a, Vector256<float> b, Vector256<float> acc)
    {
        // AVX-VNNI's vpdpwssd is the same sum in one instruction (no saturation; the sums never overflow).
        if (AvxVnni.IsSupported) return AvxVnni.MultiplyWideningAndAdd(acc.AsInt32(), a.AsInt16(), b.AsInt16()).AsSingle();
        if (Avx2.IsSupported) return Avx2.Add(Avx2.MultiplyAddAdjacent(a.AsInt16(), b.AsInt16()), acc.AsInt32()).AsSingle();
        // Without AVX2: the two 128-bit halves in the cross-platform form.
        return Vector256.Create(PortableOps.MultiplyAddPairs(a.GetLower(), b.GetLower(), acc.GetLower()),
            PortableOps.MultiplyAddPairs(a.GetUpper(), b.GetUpper(), acc.GetUpper()));
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Int32ToSingle(Vector256<float> v) => Vector256.ConvertToSingle(v.AsInt32());
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
}

/// <summary>128-bit vectors through the cross-platform API: SSE on any x64, NEON on Arm64, emulated elsewhere.</summary>
internal readonly unsafe struct PortableOps : IVectorOps<Vector128<float>>
{
    public static int Count => Vector128<float>.Count;
    /// <summary>16 on x64 without AVX-512 (Arm64 has 32, but the wider passes are not measured there).</summary>
    public static int Registers => 16;
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
    public static void LoadBFloat16Pair(uint* p, out Vector128<float> lo, out Vector128<float> hi)
    {
        var v = Vector128.Load(p);
        lo = Vector128.ShiftLeft(v, 16).AsSingle();
        hi = (v & Vector128.Create(0xFFFF0000u)).AsSingle();
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> LoadInt8AsInt16(sbyte* p) =>
        Vector128.WidenLower(Vector128.CreateScalar(*(long*)p).AsSByte()).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> MultiplyAddPairs(Vector128<float> a, Vector128<float> b, Vector128<float> acc)
    {
        // The cross-platform form (any CPU): each lane's two int16 halves sign-extended, multiplied and added.
        Vector128<int> x = a.AsInt32(), y = b.AsInt32();
        var low = Vector128.ShiftRightArithmetic(Vector128.ShiftLeft(x, 16), 16) * Vector128.ShiftRightArithmetic(Vector128.ShiftLeft(y, 16), 16);
        var high = Vector128.ShiftRightArithmetic(x, 16) * Vector128.ShiftRightArithmetic(y, 16);
        return (acc.AsInt32() + (low + high)).AsSingle();
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Int32ToSingle(Vector128<float> v) => Vector128.ConvertToSingle(v.AsInt32());
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
