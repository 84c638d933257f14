"""PyTorch baseline for the benchmark's `pytorch` mode.

Builds the seed architecture (serial pre-norm blocks, the seed's norm with unbiased std, sinusoidal `pe` buffer,
ReLU feed-forward, bias-free attention projections, projection with bias) with module names that give exactly our
canonical state-dict keys, loads a `torch.save` state dict, and times two greedy decoders at batch 1, each making
exactly N new tokens (EOS ignored) and each including the encoder pass:

  naive   the seed's loop: every step re-runs the decoder over the whole prefix under a causal mask;
  cached  a KV-cached loop in plain PyTorch: cross-attention K/V computed once per layer, self-attention K/V of each
          new token written into preallocated buffers, one token fed per step.

One untimed warm-up, then the median of R runs. Prints one JSON object on stdout (times in ms, generated ids).

usage: /usr/bin/python3 pytorch_baseline.py WEIGHTS.pt --source 2,17,...,3 --heads 8
                                            [--new-tokens 64] [--runs 3] [--threads 1] [--sos 2] [--pad 1]

Shapes (d_model, layers, d_ff, vocabularies, positions) are read from the state dict; the head count cannot be.
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn


class SeedNorm(nn.Module):
    """The seed's LayerNormalization: alpha * (x - mean) / (std + eps) + bias, std unbiased (N - 1)."""

    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.alpha = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))

    def forward(self, x):
        return self.alpha * (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + self.eps) + self.bias


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.h, self.d_k = heads, d // heads
        self.w_q = nn.Linear(d, d, bias=False)
        self.w_k = nn.Linear(d, d, bias=False)
        self.w_v = nn.Linear(d, d, bias=False)
        self.w_o = nn.Linear(d, d, bias=False)

    def split(self, x):
        """[b, L, d] -> [b, h, L, d_k]"""
        return x.view(x.shape[0], x.shape[1], self.h, self.d_k).transpose(1, 2)

    def attend(self, q, k, v, mask):
        """Scaled dot-product attention as the seed writes it (torch 1.13 has no scaled_dot_product_attention);
        mask: 0 = blocked, broadcast over heads; None = attend everywhere."""
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_k)
        if mask is not None:
            scores = scores.masked_fill(mask == 0, -1e9)
        x = scores.softmax(-1) @ v
        return self.w_o(x.transpose(1, 2).reshape(x.shape[0], -1, self.h * self.d_k))

    def forward(self, q, kv, mask):
        return self.attend(self.split(self.w_q(q)), self.split(self.w_k(kv)), self.split(self.w_v(kv)), mask)


class FeedForward(nn.Module):
    def __init__(self, d, d_ff):
        super().__init__()
        self.linear_1 = nn.Linear(d, d_ff)
        self.linear_2 = nn.Linear(d_ff, d)

    def forward(self, x):
        return self.linear_2(torch.relu(self.linear_1(x)))


class Residual(nn.Module):
    """Holds only the norm: the seed's state dict names it residual_connections.N.norm.*"""

    def __init__(self, d):
        super().__init__()
        self.norm = SeedNorm(d)


class EncoderLayer(nn.Module):
    def __init__(self, d, heads, d_ff):
        super().__init__()
        self.self_attention_block = Attention(d, heads)
        self.feed_forward_block = FeedForward(d, d_ff)
        self.residual_connections = nn.ModuleList([Residual(d) for _ in range(2)])

    def forward(self, x, mask):
        h = self.residual_connections[0].norm(x)
        x = x + self.self_attention_block(h, h, mask)
        return x + self.feed_forward_block(self.residual_connections[1].norm(x))


class DecoderLayer(nn.Module):
    def __init__(self, d, heads, d_ff):
        super().__init__()
        self.self_attention_block = Attention(d, heads)
        self.cross_attention_block = Attention(d, heads)
        self.feed_forward_block = FeedForward(d, d_ff)
        self.residual_connections = nn.ModuleList([Residual(d) for _ in range(3)])

    def forward(self, x, memory, src_mask, tgt_mask):
        h = self.residual_connections[0].norm(x)
        x = x + self.self_attention_block(h, h, tgt_mask)
        x = x + self.cross_attention_block(self.residual_connections[1].norm(x), memory, src_mask)
        return x + self.feed_forward_block(self.residual_connections[2].norm(x))


class Stack(nn.Module):
    def __init__(self, layers, d):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = SeedNorm(d)


class Embedding(nn.Module):
    def __init__(self, vocab, d):
        super().__init__()
        self.embedding = nn.Embedding(vocab, d)
        self.scale = math.sqrt(d)

    def forward(self, ids):
        return self.embedding(ids) * self.scale


class Positions(nn.Module):
    def __init__(self, positions, d):
        super().__init__()
        # Filled by load_state_dict: the checkpoint carries the table (persistent buffer, as in the seed).
        self.register_buffer('pe', torch.zeros(1, positions, d))


class Projection(nn.Module):
    def __init__(self, d, vocab):
        super().__init__()
        self.proj = nn.Linear(d, vocab)


class Seed(nn.Module):
    def __init__(self, d, heads, d_ff, enc_layers, dec_layers, src_vocab, tgt_vocab, src_positions, tgt_positions):
        super().__init__()
        self.encoder = Stack([EncoderLayer(d, heads, d_ff) for _ in range(enc_layers)], d)
        self.decoder = Stack([DecoderLayer(d, heads, d_ff) for _ in range(dec_layers)], d)
        self.src_embed = Embedding(src_vocab, d)
        self.tgt_embed = Embedding(tgt_vocab, d)
        self.src_pos = Positions(src_positions, d)
        self.tgt_pos = Positions(tgt_positions, d)
        self.projection_layer = Projection(d, tgt_vocab)

    def encode(self, src, src_mask):
        x = self.src_embed(src) + self.src_pos.pe[:, :src.shape[1]]
        for layer in self.encoder.layers:
            x = layer(x, src_mask)
        return self.encoder.norm(x)

    def decode(self, memory, src_mask, tgt, tgt_mask):
        x = self.tgt_embed(tgt) + self.tgt_pos.pe[:, :tgt.shape[1]]
        for layer in self.decoder.layers:
            x = layer(x, memory, src_mask, tgt_mask)
        return self.decoder.norm(x)


def build(state, heads):
    """The model whose shapes match the state dict (strict load: every key used, none missing)."""
    def layers(side):
        return len({k.split('.')[2] for k in state if k.startswith(side + '.layers.')})

    d = state['src_embed.embedding.weight'].shape[1]
    model = Seed(d, heads, state['encoder.layers.0.feed_forward_block.linear_1.weight'].shape[0],
                 layers('encoder'), layers('decoder'),
                 state['src_embed.embedding.weight'].shape[0], state['tgt_embed.embedding.weight'].shape[0],
                 state['src_pos.pe'].shape[1], state['tgt_pos.pe'].shape[1])
    model.load_state_dict(state, strict=True)
    return model.eval()


def source_mask(src, pad):
    """[1, 1, 1, S] with 0 at padding, as the seed builds it; None when there is no padding (nothing to block)."""
    return (src != pad).unsqueeze(1).unsqueeze(1).int() if bool((src == pad).any()) else None


def naive_greedy(model, src, new_tokens, sos, pad):
    """The seed's loop: encode once, then every step decode the whole prefix under a causal mask (cross-attention
    K/V recomputed too), project the last position, argmax."""
    mask = source_mask(src, pad)
    memory = model.encode(src, mask)
    tgt = torch.full((1, 1), sos, dtype=torch.long)
    for _ in range(new_tokens):
        n = tgt.shape[1]
        causal = torch.tril(torch.ones(1, n, n, dtype=torch.int))
        logits = model.projection_layer.proj(model.decode(memory, mask, tgt, causal)[:, -1])
        tgt = torch.cat([tgt, logits.argmax(-1, keepdim=True)], dim=1)
    return tgt[0, 1:].tolist()


def cached_greedy(model, src, new_tokens, sos, pad):
    """KV-cached greedy in plain PyTorch: the same arithmetic as the naive loop, but each step feeds only the newest
    token of every sequence of the batch. Cross-attention K/V depend only on the encoder output, so they are computed
    once per layer; each layer's self-attention K/V for the new position are written into buffers preallocated for all
    N positions (no per-step reallocation), and attention reads the filled prefix. No causal mask is needed: the query
    is the last position. Returns the new ids of each sequence."""
    b = src.shape[0]
    mask = source_mask(src, pad)
    memory = model.encode(src, mask)
    layers = model.decoder.layers
    cross = [(l.cross_attention_block.split(l.cross_attention_block.w_k(memory)),
              l.cross_attention_block.split(l.cross_attention_block.w_v(memory))) for l in layers]
    a0 = layers[0].self_attention_block
    k_cache = [torch.empty(b, a0.h, new_tokens, a0.d_k) for _ in layers]
    v_cache = [torch.empty(b, a0.h, new_tokens, a0.d_k) for _ in layers]
    pe = model.tgt_pos.pe
    token = torch.full((b, 1), sos, dtype=torch.long)
    out = []
    for pos in range(new_tokens):
        x = model.tgt_embed(token) + pe[:, pos:pos + 1]
        for i, layer in enumerate(layers):
            sa, ca = layer.self_attention_block, layer.cross_attention_block
            h = layer.residual_connections[0].norm(x)
            k_cache[i][:, :, pos:pos + 1] = sa.split(sa.w_k(h))
            v_cache[i][:, :, pos:pos + 1] = sa.split(sa.w_v(h))
            x = x + sa.attend(sa.split(sa.w_q(h)), k_cache[i][:, :, :pos + 1], v_cache[i][:, :, :pos + 1], None)
            h = layer.residual_connections[1].norm(x)
            x = x + ca.attend(ca.split(ca.w_q(h)), cross[i][0], cross[i][1], mask)
            x = x + layer.feed_forward_block(layer.residual_connections[2].norm(x))
        token = model.projection_layer.proj(model.decoder.norm(x)[:, -1]).argmax(-1, keepdim=True)
        out.append(token)
    return torch.cat(out, dim=1).tolist()


def timed(runs, fn):
    """One untimed warm-up (allocator, first touch of memory), then the median wall time of `runs` runs."""
    result = fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times), result


def loaded_blas():
    """The BLAS shared objects actually mapped into this process (Debian's torch links the generic libblas.so.3;
    which implementation that resolves to decides GEMM speed: OpenBLAS or the ~30x slower reference BLAS)."""
    try:
        with open('/proc/self/maps') as f:
            paths = {line.split()[-1] for line in f if '/' in line}
        return sorted(p for p in paths if 'blas' in p.rsplit('/', 1)[-1].lower())
    except OSError:
        return []


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('weights')
    p.add_argument('--source', required=True, help='comma-separated source ids, framed [SOS] ... [EOS]')
    p.add_argument('--heads', type=int, required=True)
    p.add_argument('--new-tokens', type=int, default=64)
    p.add_argument('--runs', type=int, default=3)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--sos', type=int, default=2)
    p.add_argument('--pad', type=int, default=1)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    model = build(torch.load(a.weights, map_location='cpu'), a.heads)
    src = torch.tensor([[int(t) for t in a.source.split(',')]], dtype=torch.long)
    with torch.inference_mode():
        naive_ms, naive_ids = timed(a.runs, lambda: naive_greedy(model, src, a.new_tokens, a.sos, a.pad))
        cached_ms, cached_ids = timed(a.runs, lambda: cached_greedy(model, src, a.new_tokens, a.sos, a.pad)[0])
    print(json.dumps({
        'torch': torch.__version__,
        'threads': torch.get_num_threads(),
        'blas': loaded_blas(),
        'naive_ms': naive_ms,
        'cached_ms': cached_ms,
        'naive_ids': naive_ids,
        'cached_ids': cached_ids,
    }))


if __name__ == '__main__':
    main()
