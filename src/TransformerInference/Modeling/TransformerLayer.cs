using TransformerInference.Decoding;
using TransformerInference.Loading;
using TransformerInference.Modeling.Kernels;
using static TorchSharp.torch;

namespace TransformerInference.Modeling;

/// <summary>
/// One encoder or decoder layer, serial or parallel.
/// Serial (the seed): <c>x += SA(N0(x))</c>; decoder <c>x += CA(N1(x), m)</c>; <c>x += FFN(N_last(x))</c>.
/// Serial post-norm (Marian): <c>x = N0(x + SA(x))</c>; decoder <c>x = N1(x + CA(x, m))</c>; <c>x = N_last(x + FFN(x))</c>.
/// Parallel: <c>n = N(x); x += SA(n) + FFN(n)</c>; decoder <c>x += CA(N_c(x), m)</c>.
/// </summary>
internal sealed class TransformerLayer : IDisposable
{
    private readonly BlockKind _block;
    private readonly bool _postNorm;
    private readonly Norm _selfNorm;
    private readonly Norm? _crossNorm;
    private readonly Norm? _ffnNorm; // serial only
    private readonly SelfAttention? _selfAttention; // serial, or parallel unfused
    private readonly FeedForward? _feedForward;
    private readonly FusedParallelBlock? _fused;
    private readonly CrossAttention? _crossAttention;

    public TransformerLayer(WeightSet w, string prefix, TransformerConfig c, AttentionHeads heads, bool decoder, bool fuseParallel)
    {
        _block = c.Block;
        _postNorm = c.NormPlacement == NormPlacement.Post;
        if (_block == BlockKind.Serial)
        {
            _selfNorm = new Norm(w, prefix + ".residual_connections.0.norm", c);
            if (decoder) _crossNorm = new Norm(w, prefix + ".residual_connections.1.norm", c);
            _ffnNorm = new Norm(w, prefix + $".residual_connections.{(decoder ? 2 : 1)}.norm", c);
        }
        else
        {
            _selfNorm = new Norm(w, prefix + ".norm", c);
            if (decoder) _crossNorm = new Norm(w, prefix + ".cross_attention_norm", c);
        }
        if (_block == BlockKind.Parallel && fuseParallel)
            _fused = new FusedParallelBlock(w, prefix, c, heads);
        else
        {
            _selfAttention = new SelfAttention(w, prefix + ".self_attention_block", c, heads);
            _feedForward = new FeedForward(w, prefix + ".feed_forward_block", c);
        }
        if (decoder) _crossAttention = new CrossAttention(w, prefix + ".cross_attention_block", c, heads);
    }

    public CrossAttention? CrossAttention => _crossAttention;

    /// <summary>Runs the layer. <paramref name="cross"/> holds the encoder keys/values and source mask (decoder only).</summary>
    public Tensor Forward(Tensor x, Tensor? selfMask, long offset, KvCache? cache, int layer,
        (Tensor Keys, Tensor Values, Tensor Mask)? cross)
    {
        // Each residual add and the norm after it are one step (Norm.AddForward: one kernel call on the CPU kernels).
        if (_postNorm)
        {
            x = _selfNorm.AddForwardNormOnly(x, _selfAttention!.Forward(x, selfMask, offset, cache, layer));
            if (cross is { } c0) x = _crossNorm!.AddForwardNormOnly(x, _crossAttention!.Forward(x, c0.Keys, c0.Values, c0.Mask));
            return _ffnNorm!.AddForwardNormOnly(x, _feedForward!.Forward(x));
        }
        if (_block == BlockKind.Serial)
        {
            var attention = _selfAttention!.Forward(_selfNorm.Forward(x), selfMask, offset, cache, layer);
            Tensor normed;
            if (cross is { } c1)
            {
                (x, normed) = _crossNorm!.AddForward(x, attention);
                attention = _crossAttention!.Forward(normed, c1.Keys, c1.Values, c1.Mask);
            }
            (x, normed) = _ffnNorm!.AddForward(x, attention);
            return Held.Add(x, _feedForward!.Forward(normed));
        }
        var n = _selfNorm.Forward(x);
        x = _fused is not null
            ? Held.Add(x, _fused.Forward(n, selfMask, offset, cache, layer))
            : Held.Add(Held.Add(x, _selfAttention!.Forward(n, selfMask, offset, cache, layer)), _feedForward!.Forward(n));
        if (cross is { } c2) x = Held.Add(x, _crossAttention!.Forward(_crossNorm!.Forward(x), c2.Keys, c2.Values, c2.Mask));
        return x;
    }

    /// <summary>Whether <see cref="Step"/> can run this layer: a serial block whose norms, products, attention and
    /// activation all have our CPU kernels.</summary>
    internal bool RawSteps => _block == BlockKind.Serial && _selfNorm.HasKernel && _ffnNorm!.HasKernel
        && (_crossNorm?.HasKernel ?? true) && _selfAttention!.RawSteps && _feedForward!.RawSteps
        && (_crossAttention?.RawSteps ?? true);

    /// <summary>Scratch floats per row that <see cref="Step"/> needs.</summary>
    internal long StepScratch(long dModel) => 2 * dModel + 2 * _selfAttention!.ProjectionWidth + _feedForward!.HiddenWidth;

    /// <summary>
    /// One decode step of the layer on raw memory, <paramref name="x"/> [B, d_model] updated in place: the same
    /// operations as <see cref="Forward"/> on the same kernels, without a tensor per operation. The residual sums are
    /// written into <paramref name="x"/> by the norm kernel (one rounding each, as a tensor add).
    /// </summary>
    internal unsafe void Step(float* x, long batch, long dModel, KvCache cache, int layer, byte* selfMask, long selfMaskRow,
        byte* sourceMask, long sourceMaskRow, float* scratch)
    {
        var normed = scratch;
        var output = normed + batch * dModel;
        var projected = output + batch * dModel;
        var attended = projected + batch * _selfAttention!.ProjectionWidth;
        var hidden = attended + batch * _selfAttention.ProjectionWidth;
        var (keys, values) = cache.Cross(layer);
        if (_postNorm)
        {
            _selfAttention.Step(x, batch, cache, layer, selfMask, selfMaskRow, projected, attended, output);
            _selfNorm.Run(x, output, x, x, batch);
            if (_crossAttention is not null)
            {
                _crossAttention.Step(x, batch, keys, values, sourceMask, sourceMaskRow, projected, attended, output);
                _crossNorm!.Run(x, output, x, x, batch);
            }
            _feedForward!.Step(x, batch, hidden, output);
            _ffnNorm!.Run(x, output, x, x, batch);
            return;
        }
        _selfNorm.Run(x, null, null, normed, batch);
        _selfAttention.Step(normed, batch, cache, layer, selfMask, selfMaskRow, projected, attended, output);
        if (_crossAttention is not null)
        {
            _crossNorm!.Run(x, output, x, normed, batch);
            _crossAttention.Step(normed, batch, keys, values, sourceMask, sourceMaskRow, projected, attended, output);
        }
        _ffnNorm!.Run(x, output, x, normed, batch);
        _feedForward!.Step(normed, batch, hidden, output);
        StepKernels.AddInPlace(x, output, batch * dModel);
    }

    public void Dispose()
    {
        _selfNorm.Dispose();
        _crossNorm?.Dispose();
        _ffnNorm?.Dispose();
        _selfAttention?.Dispose();
        _feedForward?.Dispose();
        _fused?.Dispose();
        _crossAttention?.Dispose();
    }
}

/// <summary>
/// The parallel block's <c>SA(n) + FFN(n)</c> in two products: one input product gives q, k, v and the FFN input
/// from the shared norm output; one output product applies [W_o | W_2] to the concatenated attention and FFN hidden
/// vectors (biases summed).
/// </summary>
internal sealed class FusedParallelBlock : IDisposable
{
    private readonly AttentionHeads _heads;
    private readonly FeedForwardKind _ffn;
    private readonly long[] _splits;
    private readonly LinearWeight _in, _out;

    public FusedParallelBlock(WeightSet w, string prefix, TransformerConfig c, AttentionHeads heads)
    {
        _heads = heads;
        _ffn = c.FeedForward;
        _splits = new[] { heads.QueryWidth, heads.KvWidth, heads.KvWidth, (long)FeedForward.InputWidth(c) };
        var qkv = SelfAttention.ReadQkv(w, prefix + ".self_attention_block", c, heads);
        var ffnIn = FeedForward.ReadInput(w, prefix + ".feed_forward_block", c);
        _in = w.Linear(AttentionWeights.Stack(w, qkv[0], qkv[1], qkv[2], ffnIn));

        var (wo, bo) = AttentionWeights.Read(w, prefix + ".self_attention_block.w_o", c.DModel, heads.QueryWidth, c);
        var (w2, b2) = FeedForward.ReadOutput(w, prefix + ".feed_forward_block", c);
        var outWeight = w.Made(cat(new[] { wo, w2 }, 1));
        var outBias = (bo, b2) switch
        {
            (null, null) => null,
            (not null, null) => bo,
            (null, not null) => b2,
            _ => w.Made(bo + b2),
        };
        wo.Dispose();
        w2.Dispose();
        if (bo is not null && b2 is not null)
        {
            bo.Dispose();
            b2.Dispose();
        }
        _out = w.Linear((outWeight, outBias));
    }

    public Tensor Forward(Tensor n, Tensor? mask, long offset, KvCache? cache, int layer)
    {
        var projected = _in.Forward(n);
        var attention = _heads.SelfAttend(projected, mask, offset, cache, layer);
        var hidden = FeedForward.Activate(_ffn, projected.narrow(-1, _splits[0] + 2 * _splits[1], _splits[3]));
        return _out.Forward(cat(new[] { attention, hidden }, -1));
    }

    public void Dispose()
    {
        _in.Dispose();
        _out.Dispose();
    }
}
