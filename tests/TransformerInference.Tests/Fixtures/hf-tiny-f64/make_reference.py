"""Float64 reference logits for the BART-family hf-tiny folders (issue 8).

An implementation of the Hugging Face Marian / M2M100 / NLLB / mBART graphs written independently of the library,
from the transformers modeling source: Marian post-norm blocks and numpy sinusoids (sin half, cos half), fairseq
sinusoids computed in float32 as M2M100SinusoidalPositionalEmbedding does (padding offset, pad row zero), mBART
learned positions (offset 2) with layernorm_embedding, pre-norm blocks with final layer norms, the embedding scale,
attention as (q_proj(x) * head_dim^-0.5) k^T, softmax, v; lm_head tied to the (decoder) embeddings or stored, and
final_logits_bias. It reads each folder's model.safetensors, computes in float64, and writes <folder>.json beside
this script: per translation case of expected.json, the teacher-forced logits of its first positions over the whole
vocabulary, and the greedy path's scores at the two ids step_top2 names (null where the token was forced).

Run (Debian: apt-get install python3-torch):  /usr/bin/python3 make_reference.py ../hf-tiny
"""
import argparse
import json
import math
import struct
from pathlib import Path

import numpy as np
import torch

FOLDERS = ["marian", "marian-separate", "m2m100", "m2m100-asym", "nllb", "mbart"]


def read_safetensors(path):
    data = path.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + size])
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        assert entry["dtype"] == "F32", (name, entry["dtype"])
        start, end = entry["data_offsets"]
        array = np.frombuffer(data[8 + size + start:8 + size + end], dtype=np.float32).reshape(entry["shape"])
        tensors[name] = torch.from_numpy(array.copy()).double()
    return tensors


def marian_sinusoids(rows, width):
    angles = np.array([[p / np.power(10000, 2 * (j // 2) / width) for j in range(width)] for p in range(rows)])
    table = np.zeros((rows, width))
    half = width // 2 if width % 2 == 0 else width // 2 + 1
    table[:, :half] = np.sin(angles[:, 0::2])
    table[:, half:] = np.cos(angles[:, 1::2])
    return torch.from_numpy(table.astype(np.float32)).double()  # Hugging Face stores the table in float32


def fairseq_sinusoids(rows, width, pad):
    half = width // 2
    step = math.log(10000) / (half - 1)
    frequency = torch.exp(torch.arange(half, dtype=torch.int64).float() * -step)  # float32, as Hugging Face does
    angles = torch.arange(rows, dtype=torch.int64).float().unsqueeze(1) * frequency.unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if width % 2 == 1:
        table = torch.cat([table, torch.zeros(rows, 1)], dim=1)
    table[pad, :] = 0
    return table.double()


class BartFamilyModel:
    def __init__(self, folder):
        self.config = c = json.loads((folder / "config.json").read_text())
        self.w = read_safetensors(folder / "model.safetensors")
        self.kind = c["model_type"]
        self.post_norm = self.kind == "marian"
        d = c["d_model"]
        if self.kind == "marian":
            self.positions, self.position_offset = marian_sinusoids(c["max_position_embeddings"], d), 0
        elif self.kind == "mbart":
            self.positions, self.position_offset = None, 2
        else:
            self.positions = fairseq_sinusoids(c["max_position_embeddings"] + 2 + 1, d, c["pad_token_id"])
            self.position_offset = c["pad_token_id"] + 1
        self.embed_scale = math.sqrt(d) if c.get("scale_embedding") else 1.0
        self.activation = {"relu": torch.relu, "swish": torch.nn.functional.silu,
                           "gelu": torch.nn.functional.gelu}[c["activation_function"]]

    def linear(self, x, prefix):
        return x @ self.w[prefix + ".weight"].T + self.w[prefix + ".bias"]

    def layer_norm(self, x, prefix):
        return torch.nn.functional.layer_norm(x, (x.shape[-1],), self.w[prefix + ".weight"], self.w[prefix + ".bias"], 1e-5)

    def attention(self, x, memory, prefix, heads, causal):
        count, width = x.shape
        head_dim = width // heads
        q = (self.linear(x, prefix + ".q_proj") * head_dim ** -0.5).view(count, heads, head_dim).transpose(0, 1)
        k = self.linear(memory, prefix + ".k_proj").view(-1, heads, head_dim).transpose(0, 1)
        v = self.linear(memory, prefix + ".v_proj").view(-1, heads, head_dim).transpose(0, 1)
        scores = q @ k.transpose(1, 2)
        if causal:
            scores = scores + torch.triu(torch.full((count, memory.shape[0]), float("-inf"), dtype=torch.float64), 1)
        out = torch.softmax(scores, -1) @ v
        return self.linear(out.transpose(0, 1).reshape(count, width), prefix + ".out_proj")

    def embed(self, ids, side):
        table = self.w.get("model.shared.weight", self.w.get(f"model.{side}.embed_tokens.weight"))
        x = table[ids] * self.embed_scale
        start, n = self.position_offset, len(ids)
        if self.kind == "mbart":
            x = x + self.w[f"model.{side}.embed_positions.weight"][start:start + n]
            return self.layer_norm(x, f"model.{side}.layernorm_embedding")
        return x + self.positions[start:start + n]

    def block(self, h, prefix, sublayers):
        for norm, run in sublayers:
            if self.post_norm:
                h = self.layer_norm(h + run(h), prefix + norm)
            else:
                h = h + run(self.layer_norm(h, prefix + norm))
        return h

    def feed_forward(self, prefix):
        return lambda x: self.linear(self.activation(self.linear(x, prefix + ".fc1")), prefix + ".fc2")

    def encode(self, ids):
        c = self.config
        h = self.embed(ids, "encoder")
        heads = c["encoder_attention_heads"]
        for i in range(c["encoder_layers"]):
            p = f"model.encoder.layers.{i}"
            h = self.block(h, p, [(".self_attn_layer_norm", lambda x, p=p: self.attention(x, x, p + ".self_attn", heads, False)),
                                  (".final_layer_norm", self.feed_forward(p))])
        return h if self.post_norm else self.layer_norm(h, "model.encoder.layer_norm")

    def decode(self, memory, ids):
        c = self.config
        h = self.embed(ids, "decoder")
        heads = c["decoder_attention_heads"]  # self- and cross-attention of the decoder
        for i in range(c["decoder_layers"]):
            p = f"model.decoder.layers.{i}"
            h = self.block(h, p, [(".self_attn_layer_norm", lambda x, p=p: self.attention(x, x, p + ".self_attn", heads, True)),
                                  (".encoder_attn_layer_norm", lambda x, p=p: self.attention(x, memory, p + ".encoder_attn", heads, False)),
                                  (".final_layer_norm", self.feed_forward(p))])
        if not self.post_norm:
            h = self.layer_norm(h, "model.decoder.layer_norm")
        head = self.w.get("lm_head.weight", self.w.get("model.shared.weight", self.w.get("model.decoder.embed_tokens.weight")))
        logits = h @ head.T
        return logits + self.w["final_logits_bias"].reshape(-1) if "final_logits_bias" in self.w else logits

    def logits(self, source, target):
        with torch.no_grad():
            return self.decode(self.encode(torch.tensor(source)), torch.tensor(target))


def main(fixtures):
    torch.set_num_threads(1)
    for name in FOLDERS:
        folder = fixtures / name
        expected = json.loads((folder / "expected.json").read_text())
        model = BartFamilyModel(folder)
        cases = []
        for case in expected["translation"]:
            tf = case["teacher_forcing"]
            logits = model.logits(case["input_ids"], tf["decoder_input_ids"])[:tf["positions"]]
            steps = model.logits(case["input_ids"], case["ids"][:-1])
            top2 = [None if t is None else [t[0], steps[s, t[0]].item(), t[2], steps[s, t[2]].item()]
                    for s, t in enumerate(case["step_top2"])]
            cases.append({"name": case["name"], "teacher_forced_logits": logits.tolist(), "step_top2": top2})
        out = Path(__file__).parent / f"{name}.json"
        out.write_text(json.dumps({"folder": name, "dtype": "float64", "made_by": Path(__file__).name, "translation": cases}))
        print(name, len(cases), "cases")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Float64 reference logits for the BART-family hf-tiny folders.")
    parser.add_argument("fixtures", type=Path, help="the hf-tiny folder (holding marian/, m2m100/, ...)")
    main(parser.parse_args().fixtures)
