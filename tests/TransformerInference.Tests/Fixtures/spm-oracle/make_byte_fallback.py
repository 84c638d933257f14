#!/usr/bin/env python3
"""Byte-fallback oracle: small BPE and unigram models trained with byte_fallback=True, and python sentencepiece's ids
and decoded text for held-out lines (characters the models do not hold become <0xNN> pieces of their UTF-8 bytes).

    /usr/bin/python3 make_byte_fallback.py [folder]   # seconds; Debian 12 python3-sentencepiece 0.1.97

Training text: the first 3,000 lines of expected.jsonl.gz (this folder); test lines: the next 1,500 and fixed lines
with emoji, CJK, Arabic, rare Devanagari and mixed scripts. Writes bpe-bytefallback.model,
unigram-bytefallback.model and bytefallback.jsonl.gz ({"text", "bpe", "unigram"} ids and {"bpe_decoded",
"unigram_decoded"} = decode(ids)), plus bytefallback-decode.json (decode of byte-piece id lists, invalid UTF-8
included).
"""
import argparse, gzip, io, json, os, tempfile
import sentencepiece as spm

_parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
_parser.add_argument("out", nargs="?", default=os.path.dirname(os.path.abspath(__file__)),
                     help="folder to write the models and cases to (default: this script's folder)")
OUT = _parser.parse_args().out
FIXED = [
    "", " ", "hello world", "I love you 😀 so much 👍🏽!", "emoji only 🎉🎉🎉", "日本語のテキスト", "中文 and English",
    "مرحبا بالعالم", "म तपाईंलाई एकदम धेरै माया गर्छु।", "ॐ ॠ ॡ ऌ ॢ ॣ ॲ ॻ", "क्ष त्र ज्ञ श्र", "Ωmega ∑ ∫ ≠ ≤ ∞",
    "tab\there", "café naïve façade", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝔐𝔞𝔱𝔥", "a\u200db\u200cc", "x😀y😀z", "🇳🇵 Nepal flag", "￥€£¢", "ऀ̸ combining",
]


def main():
    with gzip.open(os.path.join(OUT, "expected.jsonl.gz"), "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    train, held = texts[:3000], texts[3000:4500]
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            f.write("\n".join(t.replace("\n", " ") for t in train if t.strip()) + "\n")
        for kind in ["bpe", "unigram"]:
            prefix = os.path.join(tmp, kind)
            spm.SentencePieceTrainer.train(
                input=corpus, model_prefix=prefix, model_type=kind, vocab_size=1000, byte_fallback=True,
                normalization_rule_name="nmt_nfkc", character_coverage=0.995, num_threads=1, minloglevel=1)
            data = open(prefix + ".model", "rb").read()
            with open(os.path.join(OUT, f"{kind}-bytefallback.model"), "wb") as f:
                f.write(data)
            models[kind] = spm.SentencePieceProcessor(model_proto=data)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        for text in FIXED + held:
            row = {"text": text}
            for kind, sp in models.items():
                row[kind] = sp.encode(text)
                row[kind + "_decoded"] = sp.decode(row[kind])
            gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    with open(os.path.join(OUT, "bytefallback.jsonl.gz"), "wb") as f:
        f.write(buf.getvalue())
    decode = {}
    for kind, sp in models.items():
        b = lambda *xs: [sp.piece_to_id("<0x%02X>" % x) for x in xs]
        w = sp.encode("hello")
        cases = [b(0xE0, 0xA4, 0x95), b(0xE0, 0xA4), b(0xFF), w + b(0xF0, 0x9F, 0x98, 0x80) + w, b(0x41, 0x80, 0x42),
                 b(0xF0, 0x9F) + w, b(0xE2, 0x96, 0x81) + w]
        decode[kind] = [{"ids": c, "decoded": sp.decode(c)} for c in cases]
    with open(os.path.join(OUT, "bytefallback-decode.json"), "w", encoding="utf-8") as f:
        json.dump(decode, f, ensure_ascii=False, indent=1)
    for kind, sp in models.items():
        bytes_used = sum(1 for t in FIXED + held for i in sp.encode(t) if sp.is_byte(i))
        print(f"{kind}: {sp.get_piece_size()} pieces, {bytes_used} byte pieces emitted over {len(FIXED) + len(held)} lines")


if __name__ == "__main__":
    main()
