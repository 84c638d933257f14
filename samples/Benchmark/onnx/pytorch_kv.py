"""PyTorch eager baseline for the benchmark's `onnxruntime` mode: greedy decoding with a KV cache in plain PyTorch
(pytorch_baseline.py's model and batched cached loop), on the same weights and sources as the other
engines, as a long-lived process so that the benchmark can alternate its runs with the other engines' runs.

Protocol (one JSON object per line on stdout):
  start:             prints {"ready": true, "torch": ..., "threads": ..., "blas": [...]}
  stdin "B\n":       greedy over the first B sources, exactly N new tokens each (EOS ignored), encoder included;
                     prints {"ms": wall time measured here, "ids": [[...] per sequence]}
  stdin EOF/"quit":  exits

usage: /usr/bin/python3 pytorch_kv.py WEIGHTS.pt SOURCES.json --heads 8 [--new-tokens 64] [--threads 1] [--pad 1]
SOURCES.json: {"sos": 2, "sources": [[ids...], ...]} (equal lengths: no padding)
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
import pytorch_baseline as seed  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('weights')
    p.add_argument('sources')
    p.add_argument('--heads', type=int, required=True)
    p.add_argument('--new-tokens', type=int, default=64)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--pad', type=int, default=1)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    model = seed.build(torch.load(a.weights, map_location='cpu'), a.heads)
    with open(a.sources) as f:
        spec = json.load(f)
    sources = torch.tensor(spec['sources'], dtype=torch.long)
    print(json.dumps({'ready': True, 'torch': torch.__version__, 'threads': torch.get_num_threads(),
                      'blas': seed.loaded_blas()}), flush=True)
    for line in sys.stdin:
        line = line.strip()
        if line in ('', 'quit'):
            break
        src = sources[:int(line)]
        with torch.inference_mode():
            start = time.perf_counter()
            ids = seed.cached_greedy(model, src, a.new_tokens, spec['sos'], a.pad)
            ms = (time.perf_counter() - start) * 1000.0
        print(json.dumps({'ms': ms, 'ids': ids}), flush=True)


if __name__ == '__main__':
    main()
