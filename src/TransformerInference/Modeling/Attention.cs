using TorchSharp;
using TransformerInference.Decoding;
using TransformerInference.Loading;
using TransformerInference.Modeling.Kernels;
using static TorchSharp.torch;

namespace TransformerInference.Modeling;

/// <summary>Reads the q/k/v/o projections of one attention block (w_q, w_k, w_v, w_o, biases if the config has them).</summary>
internal static class AttentionWeights
{
    public static (Tensor Weight, Tensor? Bias) Read(WeightSet w, string name, long rows, long cols, TransformerConfig c)
    {
        var weight = w.Take(name + ".weight", rows, cols);
        var bias = w.TakeIf(c.AttentionBias, name + ".bias", rows);
        if (c.AttentionScaling || !name.EndsWith(".w_q", StringComparison.Ordinal)) return (weight, bias);
        // Unscaled attention (T5): the scaled dot product divides by sqrt(d_k), so queries are made sqrt(d_k) larger once.
        using var factor = Math.Sqrt(c.HeadDim).ToScalar(); // held until the native calls return (see Held)
        using var scope = NewDisposeScope();
        var scaled = (w.Made(weight.mul(factor).MoveToOuterDisposeScope()), bias is null ? null : w.Made(bias.mul(factor).MoveToOuterDisposeScope()));
        weight.Dispose();
        bias?.Dispose();
        return scaled;
    }

    /// <summary>Concatenates projections along the output dimension (one product instead of several); a missing bias
    /// becomes zeros when another part has one. The parts are disposed.</summary>
    public static (Tensor Weight, Tensor? Bias) Stack(WeightSet w, params (Tensor Weight, Tensor? Bias)[] parts)
    {
        var weight = w.Made(cat(parts.Select(p => p.Weight).ToArray(), 0));
        Tensor? bias = null;
        if (parts.Any(p => p.Bias is not null))
        {
            using var scope = NewDisposeScope();
            bias = w.Made(cat(parts.Select(p => p.Bias ?? zeros(p.Weight.shape[0], p.Weight.dtype, p.Weight.device)).ToArray(), 0));
        }
        foreach (var (wt, b) in parts)
        {
            wt.Dispose();
            b?.Dispose();
        }
        return (weight, bias);
    }
}

/// <summary>Self-attention with q, k and v computed by one fused product.</summary>
internal sealed class SelfAttention : IDisposable
{
    private readonly AttentionHeads _heads;
    private readonly LinearWeight _qkv, _out;

    public SelfAttention(WeightSet w, string prefix, TransformerConfig c, AttentionHeads heads)
    {
        _heads = heads;
        _qkv = w.Linear(AttentionWeights.Stack(w, ReadQkv(w, prefix, c, heads)));
        _out = w.Linear(AttentionWeights.Read(w, prefix + ".w_o", c.DModel, heads.QueryWidth, c));
    }

    public static (Tensor, Tensor?)[] ReadQkv(WeightSet w, string prefix, TransformerConfig c, AttentionHeads heads) => new[]
    {
        AttentionWeights.Read(w, prefix + ".w_q", heads.QueryWidth, c.DModel, c),
        AttentionWeights.Read(w, prefix + ".w_k", heads.KvWidth, c.DModel, c),
        AttentionWeights.Read(w, prefix + ".w_v", heads.KvWidth, c.DModel, c),
    };

    /// <summary>Whether <see cref="Step"/> can run (our CPU kernels for the products and the attention).</summary>
    internal bool RawSteps => _heads.RawSteps && _qkv is PackedLinear && _out is PackedLinear;

    /// <summary>Width of the fused q/k/v projection's rows.</summary>
    internal long ProjectionWidth => _qkv.OutFeatures;

    /// <summary>A decode step on raw rows <paramref name="x"/> [B, d_model] into <paramref name="output"/>; <paramref name="qkv"/>
    /// and <paramref name="attended"/> are scratch of <see cref="ProjectionWidth"/> and H·d_k floats per row.</summary>
    internal unsafe void Step(float* x, long batch, KvCache cache, int layer, byte* mask, long maskRow, float* qkv, float* attended, float* output)
    {
        ((PackedLinear)_qkv).Run(x, qkv, batch);
        _heads.Step(qkv, ProjectionWidth, cache, layer, mask, maskRow, batch, attended);
        ((PackedLinear)_out).Run(attended, output, batch);
    }

    public Tensor Forward(Tensor x, Tensor? mask, long offset, KvCache? cache, int layer)
    {
        return _out.Forward(_heads.SelfAttend(_qkv.Forward(x), mask, offset, cache, layer));
    }

    public void Dispose()
    {
        _qkv.Dispose();
        _out.Dispose();
    }
}

/// <summary>Decoder cross-attention; keys and values of the encoder output are computed once (one fused product).</summary>
internal sealed class CrossAttention : IDisposable
{
    private readonly AttentionHeads _heads;
    private readonly LinearWeight _q, _kv, _out;

    public CrossAttention(WeightSet w, string prefix, TransformerConfig c, AttentionHeads heads)
    {
        _heads = heads;
        _q = w.Linear(AttentionWeights.Read(w, prefix + ".w_q", heads.QueryWidth, c.DModel, c));
        _kv = w.Linear(AttentionWeights.Stack(w,
            AttentionWeights.Read(w, prefix + ".w_k", heads.KvWidth, c.DModel, c),
            AttentionWeights.Read(w, prefix + ".w_v", heads.KvWidth, c.DModel, c)));
        _out = w.Linear(AttentionWeights.Read(w, prefix + ".w_o", c.DModel, heads.QueryWidth, c));
    }

    /// <summary>Keys and values [B,G,S,d_k] of the encoder output.</summary>
    public (Tensor Keys, Tensor Values) ProjectMemory(Tensor memory)
    {
        var kv = _kv.Forward(memory).split(new[] { _heads.KvWidth, _heads.KvWidth }, -1);
        return (_heads.SplitKv(kv[0]).contiguous(), _heads.SplitKv(kv[1]).contiguous());
    }

    /// <summary>Whether <see cref="Step"/> can run (our CPU kernels for the products and the attention).</summary>
    internal bool RawSteps => _heads.RawSteps && _q is PackedLinear && _out is PackedLinear;

    /// <summary>A decode step on raw rows <paramref name="x"/> [B, d_model] into <paramref name="output"/>; <paramref name="q"/>
    /// and <paramref name="attended"/> are scratch of H·d_k floats per row.</summary>
    internal unsafe void Step(float* x, long batch, Tensor keys, Tensor values, byte* mask, long maskRow, float* q, float* attended, float* output)
    {
        ((PackedLinear)_q).Run(x, q, batch);
        _heads.Attend(q, keys, values, mask, maskRow, batch, attended);
        ((PackedLinear)_out).Run(attended, output, batch);
    }

    public Tensor Forward(Tensor x, Tensor keys, Tensor values, Tensor sourceMask) =>
        _out.Forward(_heads.Attend(_q.Forward(x), keys, values, sourceMask));

    public void Dispose()
    {
        _q.Dispose();
        _kv.Dispose();
        _out.Dispose();
    }
}
