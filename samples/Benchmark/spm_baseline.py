#!/usr/bin/python3
"""Python sentencepiece side of the benchmark's tokenizer mode.

    spm_baseline.py MODEL LINES        LINES: a text file (one line per input) or an oracle expected.jsonl.gz

Loads the model and the lines, prints "ready", then answers each command read from stdin with one JSON line
{"seconds": ..., "tokens": ...}:
  line    encode the lines one call each, as Hugging Face's slow tokenizers do (sp.encode(text))
  batch   encode them in one call on one thread (sp.encode(lines, num_threads=1): no per-call Python overhead)
"""
import argparse
import gzip
import json
import sys
import time

import sentencepiece as spm


def read_lines(path):
    if path.endswith(".jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return [json.loads(line)["text"] for line in f]
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")


def main():
    parser = argparse.ArgumentParser(description="Python sentencepiece side of the benchmark's tokenizer mode.")
    parser.add_argument("model", help="a SentencePiece .model file")
    parser.add_argument("lines", help="a text file (one line per input) or an oracle expected.jsonl.gz")
    args = parser.parse_args()
    sp = spm.SentencePieceProcessor(model_file=args.model)
    lines = read_lines(args.lines)
    print("ready", flush=True)
    for command in sys.stdin:
        command = command.strip()
        start = time.perf_counter()
        if command == "line":
            tokens = 0
            for text in lines:
                tokens += len(sp.encode(text))
        elif command == "batch":
            tokens = sum(len(ids) for ids in sp.encode(lines, num_threads=1))
        else:
            print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)
            continue
        seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "tokens": tokens}), flush=True)


if __name__ == "__main__":
    main()
