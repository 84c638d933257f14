"""ONNX export for the benchmark's `onnxruntime` mode: the benchmark's own weights as the three graphs Optimum
writes for a Marian model (https://huggingface.co/docs/optimum, `ORTModelForSeq2SeqLM`):

  encoder_model.onnx            input_ids [B,S], attention_mask [B,S] -> last_hidden_state [B,S,D]
  decoder_model.onnx            input_ids [B,T], encoder_attention_mask [B,S], encoder_hidden_states [B,S,D]
                                -> logits [B,T,V], present.{i}.decoder.key/value [B,H,T,d_k],
                                   present.{i}.encoder.key/value [B,H,S,d_k]   (the first step: cross K/V made here)
  decoder_with_past_model.onnx  input_ids [B,1], encoder_attention_mask [B,S],
                                past_key_values.{i}.decoder.key/value [B,H,P,d_k],
                                past_key_values.{i}.encoder.key/value [B,H,S,d_k]
                                -> logits [B,1,V], present.{i}.decoder.key/value [B,H,P+1,d_k]

The model is the seed architecture in plain PyTorch (pytorch_baseline.py: serial pre-norm blocks, the seed's norm
with unbiased std, sinusoidal table from the checkpoint, ReLU feed-forward, bias-free attention projections, an
untied projection with bias), loaded strictly from the `torch.save` state dict the benchmark wrote, so every graph
holds exactly the weights our side runs. With --int8 FORMAT each graph also gets an int8 copy (quantize.py) in
OUT/int8-FORMAT/.

usage: /usr/bin/python3 export.py WEIGHTS.pt OUT_DIR --heads 8 [--opset 17] [--int8 FORMAT ...]
Prints one JSON object (versions, files, seconds) on stdout.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
import pytorch_baseline as seed  # noqa: E402  (the model definition shared with the pytorch mode)
import quantize  # noqa: E402


def key_mask(attention_mask):
    """[B,S] with 1 = token, 0 = padding -> [B,1,1,S], what the seed's attention expects (0 = blocked)."""
    return attention_mask.unsqueeze(1).unsqueeze(1)


def embed_target(model, input_ids, past_length):
    """Token embedding * sqrt(d) + the sinusoidal rows for positions past_length .. past_length + T - 1."""
    positions = torch.arange(input_ids.shape[1], dtype=torch.long) + past_length
    return model.tgt_embed(input_ids) + model.tgt_pos.pe[0].index_select(0, positions).unsqueeze(0)


def decoder_layer(layer, x, self_k, self_v, cross_k, cross_v, self_mask, cross_mask):
    """One serial pre-norm decoder layer on precomputed K/V (self K/V already include the new positions)."""
    sa, ca = layer.self_attention_block, layer.cross_attention_block
    h = layer.residual_connections[0].norm(x)
    x = x + sa.attend(sa.split(sa.w_q(h)), self_k, self_v, self_mask)
    h = layer.residual_connections[1].norm(x)
    x = x + ca.attend(ca.split(ca.w_q(h)), cross_k, cross_v, cross_mask)
    return x + layer.feed_forward_block(layer.residual_connections[2].norm(x))


class Encoder(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model.encode(input_ids, key_mask(attention_mask))


class Decoder(nn.Module):
    """The first decoder call: no past; computes every layer's cross K/V from the encoder output."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, encoder_attention_mask, encoder_hidden_states):
        m = self.model
        t = input_ids.shape[1]
        x = embed_target(m, input_ids, 0)
        causal = torch.tril(torch.ones(t, t, dtype=torch.long)).unsqueeze(0).unsqueeze(0)
        cross_mask = key_mask(encoder_attention_mask)
        presents = []
        for layer in m.decoder.layers:
            sa, ca = layer.self_attention_block, layer.cross_attention_block
            h = layer.residual_connections[0].norm(x)
            k, v = sa.split(sa.w_k(h)), sa.split(sa.w_v(h))
            ck, cv = ca.split(ca.w_k(encoder_hidden_states)), ca.split(ca.w_v(encoder_hidden_states))
            x = decoder_layer(layer, x, k, v, ck, cv, causal, cross_mask)
            presents += [k, v, ck, cv]
        return (m.projection_layer.proj(m.decoder.norm(x)), *presents)


class DecoderWithPast(nn.Module):
    """Later calls: one new token per sequence; self K/V = past + new (returned as present), cross K/V as given."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, encoder_attention_mask, *past):
        m = self.model
        x = embed_target(m, input_ids, past[0].shape[2])
        cross_mask = key_mask(encoder_attention_mask)
        presents = []
        for i, layer in enumerate(m.decoder.layers):
            sa = layer.self_attention_block
            h = layer.residual_connections[0].norm(x)
            k = torch.cat([past[4 * i], sa.split(sa.w_k(h))], dim=2)
            v = torch.cat([past[4 * i + 1], sa.split(sa.w_v(h))], dim=2)
            # One query position attends to every past position: no causal mask.
            x = decoder_layer(layer, x, k, v, past[4 * i + 2], past[4 * i + 3], None, cross_mask)
            presents += [k, v]
        return (m.projection_layer.proj(m.decoder.norm(x)), *presents)


def kv_names(prefix, layers, cross):
    names = []
    for i in range(layers):
        names += [f'{prefix}.{i}.decoder.key', f'{prefix}.{i}.decoder.value']
        if cross:
            names += [f'{prefix}.{i}.encoder.key', f'{prefix}.{i}.encoder.value']
    return names


def export(model, heads, out, opset):
    layers = len(model.decoder.layers)
    d = model.src_embed.embedding.weight.shape[1]
    d_k = d // heads
    b, s = 2, 5
    ids = torch.full((b, s), 4, dtype=torch.long)
    mask = torch.ones(b, s, dtype=torch.long)
    hidden = torch.zeros(b, s, d)
    files = {}

    def run(module, args, names_in, names_out, axes, name):
        path = os.path.join(out, name)
        torch.onnx.export(module, args, path, input_names=names_in, output_names=names_out, dynamic_axes=axes,
                          opset_version=opset, do_constant_folding=True)
        files[name] = path

    run(Encoder(model), (ids, mask), ['input_ids', 'attention_mask'], ['last_hidden_state'],
        {'input_ids': {0: 'batch', 1: 'source'}, 'attention_mask': {0: 'batch', 1: 'source'},
         'last_hidden_state': {0: 'batch', 1: 'source'}}, 'encoder_model.onnx')

    present = kv_names('present', layers, cross=True)
    axes = {'input_ids': {0: 'batch', 1: 'target'}, 'encoder_attention_mask': {0: 'batch', 1: 'source'},
            'encoder_hidden_states': {0: 'batch', 1: 'source'}, 'logits': {0: 'batch', 1: 'target'}}
    for n in present:
        axes[n] = {0: 'batch', 2: 'source' if '.encoder.' in n else 'target'}
    run(Decoder(model), (torch.full((b, 1), 2, dtype=torch.long), mask, hidden),
        ['input_ids', 'encoder_attention_mask', 'encoder_hidden_states'], ['logits'] + present, axes,
        'decoder_model.onnx')

    past_in = kv_names('past_key_values', layers, cross=True)
    present = kv_names('present', layers, cross=False)
    p = 3
    past = []
    for n in past_in:
        past.append(torch.zeros(b, heads, s if '.encoder.' in n else p, d_k))
    axes = {'input_ids': {0: 'batch'}, 'encoder_attention_mask': {0: 'batch', 1: 'source'}, 'logits': {0: 'batch'}}
    for n in past_in:
        axes[n] = {0: 'batch', 2: 'source' if '.encoder.' in n else 'past'}
    for n in present:
        axes[n] = {0: 'batch', 2: 'past_plus_one'}
    run(DecoderWithPast(model), (torch.full((b, 1), 5, dtype=torch.long), mask, *past),
        ['input_ids', 'encoder_attention_mask'] + past_in, ['logits'] + present, axes, 'decoder_with_past_model.onnx')
    return files


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('weights')
    p.add_argument('out')
    p.add_argument('--heads', type=int, required=True)
    p.add_argument('--opset', type=int, default=17)
    p.add_argument('--int8', choices=quantize.FORMATS, action='append', default=[],
                   help='also write an int8 copy (dynamic quantization of the MatMul weights) in this format to '
                        'OUT/int8-FORMAT/ (repeatable)')
    a = p.parse_args()

    start = time.perf_counter()
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)
    model = seed.build(torch.load(a.weights, map_location='cpu'), a.heads)
    with torch.no_grad():
        files = export(model, a.heads, a.out, a.opset)
    exported = time.perf_counter() - start
    quantized = {}
    for fmt in a.int8:
        int8_dir = os.path.join(a.out, 'int8-' + fmt)
        os.makedirs(int8_dir, exist_ok=True)
        quantized[fmt] = {name: quantize.quantize_file(path, os.path.join(int8_dir, name), fmt)
                          for name, path in files.items()}
    import onnx
    print(json.dumps({
        'torch': torch.__version__, 'onnx': onnx.__version__, 'opset': a.opset, 'files': files,
        'int8': quantized, 'export_seconds': exported, 'seconds': time.perf_counter() - start,
    }))


if __name__ == '__main__':
    main()
