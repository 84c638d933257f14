"""Dynamic int8 quantization of an ONNX graph's MatMul weights, written with the `onnx` package alone (onnxruntime's
Python package, whose `quantize_dynamic` does this, is not on Debian's or PyPI-free feeds here).

Every MatMul whose second input is a 2-D float initializer W [K, N] (the weight products: attention projections,
feed-forward, output projection; attention's activation x activation products are left alone) becomes

  int8 formats (default `s8`):  com.microsoft DynamicQuantizeMatMul(A, W_q, scale[N], [zero_point[N]], [bias])

ONNX Runtime's CPU kernel for it quantizes A per call to uint8 (per tensor, asymmetric), runs MLAS's integer GEMM on
weights prepacked at session load, and applies scales (and the bias, when the MatMul's only consumer is an Add of a
1-D initializer, which is folded in) in the same pass. This is the node ORT's own optimizer produces from
`quantize_dynamic`'s output (DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul); the `-ops` formats write that
unfused form instead, to check the fusion gives the same speed.

Formats: s8 = int8 weights, symmetric per output channel (scale = max|w| / 127, zero point 0: what our library
does); s7 = the same in [-63, 63] (quantize_dynamic's reduce_range): on x86 CPUs without VNNI, MLAS multiplies uint8
activations by int8 weights with vpmaddubsw, whose int16 pair sums saturate when both are large (255 * 127 * 2 >
32767), which 7-bit weights avoid; u8 = uint8 weights, asymmetric per output channel (zero point per channel, MLAS's
exact u8u8 path); a `-tensor` suffix uses one scale for the whole matrix (quantize_dynamic's default), `-ops` writes
the unfused ONNX ops.

usage: /usr/bin/python3 quantize.py IN.onnx OUT.onnx [--format s8]
"""
import argparse
import json

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

FORMATS = ['s8', 's7', 'u8', 's8-tensor', 's7-tensor', 'u8-tensor', 's8-ops', 's7-ops', 'u8-ops']


def quantize_weight(w, signed, per_channel, limit=127):
    """w [K, N] float32 -> (q [K, N] int8/uint8, scale [N] or [], zero_point [N] or [] of q's type); signed weights
    use [-limit, limit]."""
    axis = 0 if per_channel else None
    if signed:
        scale = np.abs(w).max(axis=axis) / float(limit)
        scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
        q = np.clip(np.rint(w / scale), -limit, limit).astype(np.int8)
        zero = np.zeros_like(scale, dtype=np.int8)
    else:
        lo = np.minimum(w.min(axis=axis), 0.0)
        hi = np.maximum(w.max(axis=axis), 0.0)
        scale = (hi - lo) / 255.0
        scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
        zero = np.clip(np.rint(-lo / scale), 0, 255).astype(np.uint8)
        q = np.clip(np.rint(w / scale) + zero, 0, 255).astype(np.uint8)
    return q, np.asarray(scale, dtype=np.float32), np.asarray(zero)


def quantize_model(model, fmt):
    signed = fmt.startswith('s')
    limit = 63 if fmt.startswith('s7') else 127
    per_channel = '-tensor' not in fmt
    fused = '-ops' not in fmt
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}

    new_nodes, removed, dropped_inits = [], set(), set()
    done = 0
    for node in graph.node:
        if id(node) in removed:
            continue
        w_name = node.input[1] if node.op_type == 'MatMul' else None
        w_init = inits.get(w_name) if w_name else None
        if w_init is None or len(w_init.dims) != 2 or w_init.data_type != TensorProto.FLOAT:
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(w_init)
        q, scale, zero = quantize_weight(w, signed, per_channel, limit)
        base = f'{w_name}_quantized'
        graph.initializer.extend([numpy_helper.from_array(q, base), numpy_helper.from_array(scale, base + '_scale')])
        if not (signed and fused):  # symmetric int8 needs no zero point in the fused node (it defaults to 0)
            graph.initializer.append(numpy_helper.from_array(zero, base + '_zero_point'))
        if len(consumers[w_name]) == 1:
            dropped_inits.add(w_name)
        a, out = node.input[0], node.output[0]
        if fused:
            inputs = [a, base, base + '_scale', '' if signed else base + '_zero_point']
            # Fold a following bias Add (MatMul's only consumer, other input a 1-D initializer of size N).
            after = consumers.get(out, [])
            if len(after) == 1 and after[0].op_type == 'Add' and out not in graph_outputs:
                add = after[0]
                bias = add.input[1] if add.input[0] == out else add.input[0]
                if bias in inits and list(inits[bias].dims) == [w.shape[1]]:
                    inputs.append(bias)
                    out = add.output[0]
                    removed.add(id(add))
            if inputs[3] == '' and len(inputs) == 4:
                inputs = inputs[:3]
            new_nodes.append(helper.make_node('DynamicQuantizeMatMul', inputs, [out], name=node.name + '_quant',
                                              domain='com.microsoft'))
        else:
            # quantize_dynamic's unfused form: A -> uint8 per call; integer product; back to float with both scales.
            p = node.name + '_quant'
            new_nodes += [
                helper.make_node('DynamicQuantizeLinear', [a], [p + '_a', p + '_a_scale', p + '_a_zp'], name=p + '_dql'),
                helper.make_node('MatMulInteger', [p + '_a', base, p + '_a_zp', base + '_zero_point'], [p + '_i32'],
                                 name=p + '_mmi'),
                helper.make_node('Cast', [p + '_i32'], [p + '_f32'], to=TensorProto.FLOAT, name=p + '_cast'),
                helper.make_node('Mul', [p + '_a_scale', base + '_scale'], [p + '_scale'], name=p + '_scales'),
                helper.make_node('Mul', [p + '_f32', p + '_scale'], [out], name=p + '_mul'),
            ]
        done += 1

    del graph.node[:]
    graph.node.extend(new_nodes)
    kept = [i for i in graph.initializer if i.name not in dropped_inits]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if fused and not any(o.domain == 'com.microsoft' for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid('com.microsoft', 1))
    return done


def quantize_file(src, dst, fmt):
    model = onnx.load(src)
    count = quantize_model(model, fmt)
    onnx.save(model, dst)
    return {'path': dst, 'format': fmt, 'matmuls': count}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('src')
    p.add_argument('dst')
    p.add_argument('--format', choices=FORMATS, default='s8')
    a = p.parse_args()
    print(json.dumps(quantize_file(a.src, a.dst, a.format)))


if __name__ == '__main__':
    main()
