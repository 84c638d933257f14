#!/usr/bin/env python3
"""Byte-fallback oracle: tiny BPE and unigram SentencePiece models trained with byte_fallback=True, and python
sentencepiece's ids and decoded text for held-out lines full of characters the models do not hold.

Run with Debian 12's python3-sentencepiece (0.1.97), no network:  /usr/bin/python3 make_oracle.py
"stripped" is the decoded text after Python's str.strip(), as T5Tokenizer.convert_tokens_to_string returns it.
Writes rules.tsv (the normalizer's rules), bpe-bf.model, unigram-bf.model and expected.jsonl (one line per case). T5-style ids (pad 0, </s> 1,
<unk> 2, no <s>) so the same models also serve as a T5 spiece.model.
"""
import io
import json
import random

import sentencepiece as spm

assert spm.__version__ == "0.1.97", spm.__version__
rng = random.Random(1234)

EN = ("the of and to in is that for it as was with be by on not he this are or his from at which but have an they "
      "you were her she there been one all we their has would when if so no what can more out up about into them "
      "translation model sentence token language word piece byte fallback unknown character text").split()
DEV = "नमस्ते भारत नेपाल भाषा किताब पानी घर दिन रात समय लोग काम बात शहर गाँव".split()


def sentence(r):
    words = [r.choice(EN) for _ in range(r.randint(3, 12))]
    if r.random() < 0.3:
        words += [r.choice(DEV) for _ in range(r.randint(1, 4))]
    s = " ".join(words)
    return s[0].upper() + s[1:] + r.choice(".!?,;")


train = [sentence(rng) for _ in range(4000)]

# Characters the models never see (or see too rarely to keep, character_coverage < 1): rare CJK, emoji (one and
# two UTF-16 units, ZWJ sequences, skin tones, flags), Devanagari signs, combining marks, Arabic, Thai, symbols.
RARE = list("龘鬱纛齉靐㐀𠀀𪚥丼") + ["😀", "👍🏽", "👩‍💻", "🇳🇵", "🤖", "❤️", "✓", "€", "½"] \
    + list("ॐऋॠऌॡ।॥ऽ") + ["e\u0301", "a\u0308\u0323", "\u0915\u094d\u200d", "n\u0303"] \
    + list("سلامกขฅ∑∫≈ß") + ["\u00ad", "\ufeff", "\u200b", "\u2028", "\x01", "\x7f", "\t", "\r"]


def held_out(r):
    words = [r.choice(EN + DEV) for _ in range(r.randint(1, 8))]
    for _ in range(r.randint(1, 4)):
        i = r.randint(0, len(words))
        if r.random() < 0.5:
            words.insert(i, r.choice(RARE))  # a word of its own
        else:
            j = r.randrange(len(words)) if words else 0
            if words:
                w = words[j]
                k = r.randint(0, len(w))
                words[j] = w[:k] + r.choice(RARE) + w[k:]  # inside a word
    return " ".join(words)


lines = [held_out(rng) for _ in range(300)]
lines += [c for c in RARE]  # each alone
lines += ["".join(RARE), " ".join(RARE), "😀😀😀 the 😀", "  龘  the  ", "the龘", "龘the", "", " ", "x" * 40 + "😀"]

# A small normalization rule set (sentencepiece's TSV format: source code points, tab, target code points) instead
# of nmt_nfkc, whose 240 KB precompiled charsmap would make each model too large to check in: full-width Latin,
# fractions, white space and format characters, a ligature.
RULES = [(0xFF21 + i, [0x41 + i]) for i in range(26)] + [(0xFF41 + i, [0x61 + i]) for i in range(26)] + [
    (0x00BD, [0x31, 0x2044, 0x32]), (0x0009, [0x20]), (0x2028, [0x20]), (0x200B, [0x20]), (0x00A0, [0x20]),
    (0xFB01, [0x66, 0x69]), (0x2126, [0x03A9])]
with open("rules.tsv", "w", encoding="utf-8") as f:
    for src, tgt in RULES:
        f.write("%X\t%s\n" % (src, " ".join("%X" % c for c in tgt)))
NORMALIZED = ["ＡＢＣ ｔｈｅ", "ﬁne 龘", "Ω½", "a\u00a0b\u200b😀", "the\tone\u2028two"]
lines += NORMALIZED + [n + " " + held_out(rng) for n in NORMALIZED]

out = []
for kind in ("bpe", "unigram"):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(train), model_writer=model, model_type=kind, vocab_size=700,
        byte_fallback=True, character_coverage=0.9995, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        hard_vocab_limit=False, normalization_rule_tsv="rules.tsv", num_threads=1, minloglevel=2)
    open(f"{kind}-bf.model", "wb").write(model.getvalue())

for kind in ("bpe", "unigram"):
    sp = spm.SentencePieceProcessor(model_file=f"{kind}-bf.model")
    for line in lines:
        ids = sp.encode(line)
        out.append({"model": kind, "text": line, "ids": ids, "decoded": sp.decode(ids), "stripped": sp.decode(ids).strip()})

    # Decoding alone: byte pieces that do not form valid UTF-8 (truncated, lone continuation, overlong, surrogate,
    # out of range), mixed with ordinary pieces, <unk> and the first piece's leading "▁".
    byte = {b: sp.piece_to_id("<0x%02X>" % b) for b in range(256)}
    word = sp.piece_to_id("▁the")
    assert word != sp.unk_id()
    seqs = [[0xE4], [0xE4, 0xB8], [0x80], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xFF, 0x41],
            [0xF0, 0x9F, 0x98, 0x80, 0x80], [0xE2, 0x96, 0x81], [0x20], [0x00], [0xEF, 0xBF, 0xBD]]
    for seq in seqs:
        for before, after in (([], []), ([word], []), ([], [word]), ([word], [word]), ([sp.unk_id()], [word, 1])):
            ids = before + [byte[b] for b in seq] + after
            out.append({"model": kind, "text": None, "ids": ids, "decoded": sp.decode(ids), "stripped": sp.decode(ids).strip()})
    r = random.Random(99)
    for _ in range(100):
        ids = [r.choice([byte[r.randrange(256)], byte[r.choice([0xE0, 0xF0, 0x80, 0xBF, 0xC3, 0xA9])], word,
                         r.randrange(3, sp.get_piece_size())]) for _ in range(r.randint(1, 8))]
        out.append({"model": kind, "text": None, "ids": ids, "decoded": sp.decode(ids), "stripped": sp.decode(ids).strip()})

with open("expected.jsonl", "w", encoding="utf-8") as f:
    for row in out:
        f.write(json.dumps(row, ensure_ascii=True) + "\n")
print(len(out), "cases")
