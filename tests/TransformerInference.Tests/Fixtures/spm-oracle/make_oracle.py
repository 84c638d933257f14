#!/usr/bin/python3
"""Builds the SentencePiece oracle in this folder (see README.md).

Needs Debian's python3-sentencepiece (0.1.97) and no network. It assembles a training text from files every
Debian system has (package changelogs and copyright notices, the Python standard library's comments and
docstrings) plus generated text (Devanagari words and sentences, numbers, versions, repeated characters,
punctuation runs, periodic patterns, mixed scripts), trains a BPE and a unigram model of 16,000 pieces with the
default nmt_nfkc normalizer, and writes sentencepiece's ids for held-out lines that training never saw.

    /usr/bin/python3 make_oracle.py [output folder]     # default: the folder of this script
    /usr/bin/python3 make_oracle.py --special [folder]  # only the small user-defined/unused models (seconds)

Outputs: bpe16k.model, unigram16k.model, expected.jsonl.gz (one JSON object per line:
{"text": ..., "bpe": [ids], "unigram": [ids]}). Random choices are seeded; the natural text depends on the
files installed, so a rerun elsewhere gives different (equally valid) models.
"""
import argparse
import glob
import gzip
import hashlib
import io
import json
import os
import random
import re
import tempfile

import sentencepiece as spm

_parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
_parser.add_argument("out", nargs="?", default=os.path.dirname(os.path.abspath(__file__)),
                     help="folder to write the models and cases to (default: this script's folder)")
_parser.add_argument("--special", action="store_true", help="write the special-token cases only")
_ARGS = _parser.parse_args()
SPECIAL = _ARGS.special
OUT = _ARGS.out
VOCAB = 16000
HELD_OUT = 6000
rng = random.Random(13)


def held_out(line):
    """A fixed 2 % of natural lines (by hash) never enter training."""
    return hashlib.md5(line.encode("utf-8", "surrogatepass")).digest()[0] < 5


def natural_lines():
    seen = set()
    files = sorted(glob.glob("/usr/share/doc/*/changelog*.gz"))
    files += sorted(glob.glob("/usr/share/doc/*/copyright"))
    files += sorted(glob.glob("/usr/lib/python3*/**/*.py", recursive=True))
    for path in files:
        try:
            if path.endswith(".gz"):
                data = gzip.open(path).read().decode("utf-8", "replace")
            else:
                data = open(path, encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        for line in data.splitlines():
            if path.endswith(".py"):
                m = re.match(r"\s*(#+|\"\"\"|''')\s*(.*)", line)
                if not m:
                    continue
                line = m.group(2)
            line = line.strip()
            if len(line) < 8 or line in seen:
                continue
            seen.add(line)
            yield line


# --- Devanagari -----------------------------------------------------------------------------------------------
CONS = [chr(c) for c in range(0x0915, 0x0939 + 1)]
VOWELS = [chr(c) for c in range(0x0905, 0x0914 + 1)]
SIGNS = ["", "", "", "\u093e", "\u093f", "\u0940", "\u0941", "\u0942", "\u0947", "\u0948", "\u094b", "\u094c",
         "\u0943"]
MODS = ["", "", "", "", "", "\u0902", "\u0901", "\u0903"]
VIRAMA = "\u094d"
DEVA_DIGITS = [chr(c) for c in range(0x0966, 0x0970)]
NEPALI = ("म तपाईंलाई एकदम धेरै माया गर्छु नमस्ते कस्तो छ नेपाल सुन्दर देश हो काठमाडौं हामी विद्यालय जान्छौं "
          "भारत हिन्दी मराठी भाषा पानी घर किताब साथी बच्चा खाना आमा बुवा दिदी भाइ समय आज भोलि हिजो राम्रो").split()


def deva_syllable():
    r = rng.random()
    if r < 0.08:
        return rng.choice(VOWELS) + rng.choice(MODS)
    s = rng.choice(CONS)
    if r < 0.22:
        s += VIRAMA + rng.choice(CONS)
    return s + rng.choice(SIGNS) + rng.choice(MODS)


def deva_lexicon(n):
    words = set(NEPALI)
    while len(words) < n:
        words.add("".join(deva_syllable() for _ in range(rng.choice([1, 2, 2, 3, 3, 4]))))
    words = sorted(words)
    rng.shuffle(words)
    return words


DEVA = deva_lexicon(40000)
DEVA_WEIGHTS = [1.0 / (i + 1) ** 1.05 for i in range(len(DEVA))]
SUFFIXES = ["लाई", "को", "मा", "ले", "हरू", "बाट", "सँग", "का", "की", "ने", "से", "पर"]


def deva_sentence(r):
    words = r.choices(DEVA, DEVA_WEIGHTS, k=r.randint(3, 18))
    words = [w + r.choice(SUFFIXES) if r.random() < 0.2 else w for w in words]
    end = r.choice(["।", "।", "?", "!", "", "॥"])
    return " ".join(words) + end


# --- English from a word list learnt from the natural text ----------------------------------------------------
def english_words(lines):
    counts = {}
    for line in lines[:200000]:
        for w in re.findall(r"[A-Za-z]+", line):
            counts[w] = counts.get(w, 0) + 1
    return [w for w, _ in sorted(counts.items(), key=lambda kv: -kv[1])[:30000]]


# --- patterns where several segmentations score the same -------------------------------------------------------
PUNCT = list("+-=*#~_.!?,;:/\\|()[]{}<>'\"`^%&@$")
SYMBOLS = list("→←★☆♥♦©®°±×÷§¶•…€£¥₹")


def number(r):
    k = r.random()
    if k < 0.25:
        return str(r.randint(0, 10 ** r.randint(1, 12)))
    if k < 0.4:
        return ".".join(str(r.randint(0, 300)) for _ in range(r.randint(2, 5))) + (
            "-" + str(r.randint(0, 20)) if r.random() < 0.5 else "")
    if k < 0.55:
        return r.choice("0123456789") * r.randint(2, 14)
    if k < 0.7:
        return "".join(r.choice(DEVA_DIGITS) for _ in range(r.randint(1, 8)))
    if k < 0.85:
        return f"{r.randint(1900, 2030)}{r.randint(1, 12):02d}{r.randint(1, 28):02d}"
    return r.choice(["0x", "#", "v", "e", "JPEG", "MP", "ISO", "RFC"]) + "".join(
        r.choice("0123456789abcdef") for _ in range(r.randint(2, 10)))


def pattern(r):
    k = r.random()
    if k < 0.2:
        return r.choice(PUNCT) * r.randint(2, 30)
    if k < 0.35:
        return r.choice("aeioumnsxyzkAEMTO") * r.randint(2, 20)
    if k < 0.5:
        unit = "".join(r.choice(PUNCT + list("abcxyz01")) for _ in range(r.randint(1, 4)))
        return unit * r.randint(2, 10)
    if k < 0.6:
        return r.choice(PUNCT) * r.randint(1, 12) + r.choice(PUNCT) * r.randint(1, 12)
    if k < 0.7:
        return (r.choice(CONS) + r.choice(SIGNS)) * r.randint(2, 8)
    if k < 0.8:
        return r.choice(SYMBOLS) * r.randint(1, 6)
    if k < 0.9:
        return number(r)
    return r.choice(DEVA) + r.choice(["", "-", "_", "/"]) + r.choice(["JPEG2000", "MP3", "UTF-8", "x86_64", "H.264"])


def mixed_sentence(r, en):
    out = []
    for _ in range(r.randint(3, 20)):
        k = r.random()
        if k < 0.45:
            out.append(r.choice(en[: r.choice([300, 3000, 30000])]))
        elif k < 0.7:
            out.append(r.choices(DEVA, DEVA_WEIGHTS)[0])
        elif k < 0.85:
            out.append(number(r))
        else:
            out.append(pattern(r))
    sep = r.choice([" ", " ", " ", "  ", "\t", " \u3000 "])
    return sep.join(out)


def english_sentence(r, en):
    words = [r.choice(en[: r.choice([200, 2000, 30000])]) for _ in range(r.randint(3, 20))]
    words[0] = words[0].capitalize()
    return " ".join(words) + r.choice([".", ".", "?", "!", ",", ""])


def adversarial(r, en):
    k = r.random()
    if k < 0.15:
        return (" " * r.randint(0, 3)) + pattern(r) + (" " * r.randint(0, 3))
    if k < 0.3:
        return " ".join(pattern(r) for _ in range(r.randint(2, 8)))
    if k < 0.4:
        # characters the models never saw: CJK, emoji, rare symbols, alone or in runs
        s = "".join(chr(r.randint(0x4E00, 0x9FFF)) for _ in range(r.randint(1, 6)))
        return r.choice([s, s + " " + english_sentence(r, en), "😀" * r.randint(1, 3) + r.choice(en),
                         r.choice(en) + "🇳🇵" + r.choice(DEVA), "\u0600\u0627\u0644" + r.choice(en)])
    if k < 0.5:
        # NFKC: full-width, ligatures, compatibility digits, non-breaking spaces
        s = english_sentence(r, en)
        return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" and r.random() < 0.3 else c for c in s) \
            .replace("fi", "ﬁ").replace(" ", r.choice([" ", "\u00a0", "\u2003"]))
    if k < 0.6:
        return number(r) + " " + number(r) + r.choice(PUNCT) * r.randint(1, 9) + number(r)
    if k < 0.7:
        unit = r.choice(en[:500]) + r.choice(["", " ", "-"])
        return unit * r.randint(2, 8)
    if k < 0.8:
        return deva_sentence(r) + " " + pattern(r) + " " + deva_sentence(r)
    return mixed_sentence(r, en)


def main():
    os.makedirs(OUT, exist_ok=True)
    natural = list(natural_lines())
    train_natural = [l for l in natural if not held_out(l)]
    test_natural = [l for l in natural if held_out(l)]
    en = english_words(train_natural)
    print(f"natural lines: {len(train_natural)} train, {len(test_natural)} held out; {len(en)} English words")

    train = list(train_natural)
    for _ in range(150000):
        train.append(deva_sentence(rng))
    for _ in range(60000):
        train.append(mixed_sentence(rng, en))
    for _ in range(40000):
        train.append(english_sentence(rng, en))
    for _ in range(40000):
        train.append(" ".join(pattern(rng) for _ in range(rng.randint(1, 6))))
    rng.shuffle(train)
    train = [l for l in train if l.strip()]

    # Held-out lines: generated with another seed, plus natural lines training never saw.
    test_rng = random.Random(2026)
    tests = test_rng.sample(test_natural, min(1500, len(test_natural)))
    makers = [lambda: deva_sentence(test_rng), lambda: mixed_sentence(test_rng, en),
              lambda: english_sentence(test_rng, en), lambda: adversarial(test_rng, en),
              lambda: adversarial(test_rng, en)]
    while len(tests) < HELD_OUT:
        line = test_rng.choice(makers)()
        tests.append(line.replace("\n", " ").replace("\r", " "))
    tests += ["", " ", "▁", "▁▁x", "\t\t", "a", "11100", "binutils (2.21.90.20111004-1)", "14 +++++++-------",
              "e76888", "JPEG2000 " + DEVA[0]]

    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            for line in train:
                f.write(line.replace("\n", " ") + "\n")
        print(f"training text: {os.path.getsize(corpus) / 1e6:.1f} MB, {len(train)} lines")
        models = {}
        for kind in ["bpe", "unigram"]:
            prefix = os.path.join(tmp, kind)
            spm.SentencePieceTrainer.train(
                input=corpus, model_prefix=prefix, model_type=kind, vocab_size=VOCAB,
                normalization_rule_name="nmt_nfkc", character_coverage=0.9995, input_sentence_size=600000,
                shuffle_input_sentence=True, num_threads=os.cpu_count() or 1, minloglevel=1)
            data = open(prefix + ".model", "rb").read()
            with open(os.path.join(OUT, f"{kind}16k.model"), "wb") as f:
                f.write(data)
            models[kind] = spm.SentencePieceProcessor(model_proto=data)

    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        for text in tests:
            row = {"text": text}
            for kind, sp in models.items():
                row[kind] = sp.encode(text)
            gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    with open(os.path.join(OUT, "expected.jsonl.gz"), "wb") as f:
        f.write(buf.getvalue())
    for kind, sp in models.items():
        print(f"{kind}: {sp.get_piece_size()} pieces")
    print(f"held-out lines: {len(tests)}")


# --- small models with USER_DEFINED and UNUSED pieces -------------------------------------------------------------
USER_DEFINED = ["<sep>", "JPEG2000", "@@", "क्ष", "++", "ＡＢ", "ﬁx", "x y"]  # the last three: NFKC would change them


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(data, pos):
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, pos


def mark_unused(model, every):
    """Rewrites a ModelProto so that every `every`-th normal piece of two or more characters has type UNUSED (5):
    the type field is appended to the piece message (protobuf keeps the last value of a scalar field)."""
    out = bytearray()
    pos = index = 0
    marked = []
    while pos < len(model):
        key, body = read_varint(model, pos)
        field, wire = key >> 3, key & 7
        if wire == 2:
            length, start = read_varint(model, body)
            payload = model[start:start + length]
            end = start + length
            if field == 1:
                text, ptype, p = None, 1, 0
                while p < len(payload):
                    k, p = read_varint(payload, p)
                    if k & 7 == 2:
                        n, p = read_varint(payload, p)
                        if k >> 3 == 1:
                            text = payload[p:p + n].decode("utf-8")
                        p += n
                    elif k & 7 == 5:
                        p += 4
                    else:
                        v, p = read_varint(payload, p)
                        if k >> 3 == 3:
                            ptype = v
                if ptype == 1 and len(text) >= 2 and index % every == 0:
                    payload = payload + bytes([0x18, 5])
                    marked.append(text)
                if ptype == 1:
                    index += 1
            out += varint(key) + varint(len(payload)) + payload
            pos = end
        elif wire == 0:
            _, end = read_varint(model, body)
            out += model[pos:end]
            pos = end
        else:
            end = body + (8 if wire == 1 else 4)
            out += model[pos:end]
            pos = end
    return bytes(out), marked


def special():
    with gzip.open(os.path.join(OUT, "expected.jsonl.gz"), "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    r = random.Random(5)
    lines = []
    for text in texts[:2500]:
        words = text.split(" ")
        for _ in range(r.randint(0, 3)):
            words.insert(r.randint(0, len(words)), r.choice(USER_DEFINED) * r.randint(1, 2) + r.choice(["", "x", "१"]))
        lines.append(" ".join(words))
    buf = io.BytesIO()
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            f.write("\n".join(t.replace("\n", " ") for t in texts if t.strip()) + "\n")
        for kind in ["bpe", "unigram"]:
            prefix = os.path.join(tmp, kind)
            spm.SentencePieceTrainer.train(
                input=corpus, model_prefix=prefix, model_type=kind, vocab_size=2000, user_defined_symbols=USER_DEFINED,
                normalization_rule_name="nmt_nfkc", character_coverage=0.9995, num_threads=1, minloglevel=1)
            data, marked = mark_unused(open(prefix + ".model", "rb").read(), 7)
            with open(os.path.join(OUT, f"{kind}-special.model"), "wb") as f:
                f.write(data)
            models[kind] = spm.SentencePieceProcessor(model_proto=data)
            print(f"{kind}-special: {models[kind].get_piece_size()} pieces, {len(marked)} marked unused")
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        for text in lines:
            row = {"text": text}
            for kind, sp in models.items():
                row[kind] = sp.encode(text)
            gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    with open(os.path.join(OUT, "special.jsonl.gz"), "wb") as f:
        f.write(buf.getvalue())
    print(f"special lines: {len(lines)}")


if __name__ == "__main__":
    special() if SPECIAL else main()
