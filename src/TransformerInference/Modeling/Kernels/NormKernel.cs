using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace TransformerInference.Modeling.Kernels;

/// <summary>
/// Row-wise normalisation of CPU float32 rows (<see cref="NormKind"/>), optionally of <c>x + residual</c> (the sum is
/// written too): one call instead of the five to seven LibTorch ops of a norm and the add before it. Each row's mean
/// and variance are summed in float64 in one fixed order (<see cref="Sum"/>); the per-element part is elementwise. So every vector
/// width gives the same bits, and a row's result does not depend on the other rows.
/// </summary>
internal static unsafe class NormKernel<TOps, TV> where TOps : IVectorOps<TV> where TV : struct
{
    /// <summary>Normalises <paramref name="rows"/> rows of <paramref name="width"/> floats of <paramref name="x"/>
    /// (plus <paramref name="residual"/> when not null, the sum stored in <paramref name="sum"/>, which may be
    /// <paramref name="y"/>) into <paramref name="y"/>. <paramref name="bias"/> is null for RMSNorm.</summary>
    public static void Run(NormKind kind, float* x, float* residual, float* sum, float* y, long rows, int width, float eps,
        float* weight, float* bias)
    {
        for (long r = 0; r < rows; r++)
        {
            var xr = x + r * width;
            var yr = y + r * width;
            if (residual != null)
            {
                var sr = sum + r * width;
                Add(xr, residual + r * width, sr, width);
                xr = sr;
            }
            switch (kind)
            {
                case NormKind.Seed:
                {
                    // The seed's norm: unbiased std, eps added to the std; y = bias + weight · (x − mean) / (std + eps).
                    var (mean, squares) = Moments(xr, width);
                    var denominator = (float)Math.Sqrt(squares / (width - 1)) + eps;
                    Affine(xr, yr, width, (float)mean, denominator, divide: true, weight, bias);
                    break;
                }
                case NormKind.LayerNorm:
                {
                    // torch LayerNorm: biased variance; y = (x − mean) · rsqrt(var + eps) · weight + bias.
                    var (mean, squares) = Moments(xr, width);
                    var scale = (float)(1 / Math.Sqrt(squares / width + eps));
                    Affine(xr, yr, width, (float)mean, scale, divide: false, weight, bias);
                    break;
                }
                default:
                {
                    // RMSNorm: y = x · rsqrt(mean(x²) + eps) · weight.
                    var squares = Sum(xr, width, 0, squares: true);
                    var scale = (float)(1 / Math.Sqrt(squares / width + eps));
                    Scale(xr, yr, width, scale, weight);
                    break;
                }
            }
        }
    }

    /// <summary>The mean and the sum of squared deviations from it, in float64 (two passes).</summary>
    private static (double Mean, double Squares) Moments(float* x, int width)
    {
        var mean = Sum(x, width, 0, squares: false) / width;
        return (mean, Sum(x, width, mean, squares: true));
    }

    /// <summary><c>Σ x</c>, or <c>Σ (x − center)²</c>, in float64: eight lanes (four two-lane vectors) over the
    /// elements in order, combined in a fixed order, then the tail in order. One order on every path and CPU (only
    /// <see cref="Vector128{T}"/> of double, exact IEEE arithmetic everywhere), and eight independent chains instead of
    /// one, so a 512-wide row is not bound by the adds' latency.</summary>
    private static double Sum(float* x, int width, double center, bool squares)
    {
        var c = Vector128.Create(center);
        Vector128<double> a0 = Vector128<double>.Zero, a1 = a0, a2 = a0, a3 = a0;
        var i = 0;
        for (; i + 8 <= width; i += 8)
        {
            Vector128<float> lo = Vector128.Load(x + i), hi = Vector128.Load(x + i + 4);
            Vector128<double> v0 = Vector128.WidenLower(lo), v1 = Vector128.WidenUpper(lo), v2 = Vector128.WidenLower(hi), v3 = Vector128.WidenUpper(hi);
            if (squares)
            {
                v0 -= c; v1 -= c; v2 -= c; v3 -= c;
                v0 *= v0; v1 *= v1; v2 *= v2; v3 *= v3;
            }
            a0 += v0;
            a1 += v1;
            a2 += v2;
            a3 += v3;
        }
        var t = (a0 + a1) + (a2 + a3);
        var total = t[0] + t[1];
        for (; i < width; i++)
        {
            var d = x[i] - center;
            total += squares ? d * d : x[i];
        }
        return total;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Add(float* a, float* b, float* sum, int width)
    {
        var c = TOps.Count;
        var i = 0;
        for (; i + c <= width; i += c) TOps.Store(sum + i, TOps.Add(TOps.Load(a + i), TOps.Load(b + i)));
        for (; i < width; i++) sum[i] = a[i] + b[i];
    }

    /// <summary>Seed: <c>bias + weight · ((x − mean) / s)</c>; LayerNorm: <c>(x − mean) · s · weight + bias</c>.</summary>
    private static void Affine(float* x, float* y, int width, float mean, float s, bool divide, float* weight, float* bias)
    {
        var c = TOps.Count;
        var m = TOps.Create(mean);
        var sv = TOps.Create(s);
        var i = 0;
        if (divide)
        {
            for (; i + c <= width; i += c)
                TOps.Store(y + i, TOps.Add(TOps.Load(bias + i), TOps.Multiply(TOps.Load(weight + i), TOps.Divide(TOps.Subtract(TOps.Load(x + i), m), sv))));
            for (; i < width; i++) y[i] = bias[i] + weight[i] * ((x[i] - mean) / s);
            return;
        }
        for (; i + c <= width; i += c)
            TOps.Store(y + i, TOps.Add(TOps.Multiply(TOps.Multiply(TOps.Subtract(TOps.Load(x + i), m), sv), TOps.Load(weight + i)), TOps.Load(bias + i)));
        for (; i < width; i++) y[i] = (x[i] - mean) * s * weight[i] + bias[i];
    }

    /// <summary><c>(x · s) · weight</c>.</summary>
    private static void Scale(float* x, float* y, int width, float s, float* weight)
    {
        var c = TOps.Count;
        var sv = TOps.Create(s);
        var i = 0;
        for (; i + c <= width; i += c) TOps.Store(y + i, TOps.Multiply(TOps.Multiply(TOps.Load(x + i), sv), TOps.Load(weight + i)));
        for (; i < width; i++) y[i] = x[i] * s * weight[i];
    }
}
