#!/usr/bin/env python3
"""Writes tests/eval/data/python-unicode.json: what Python's own str.lower(), re's \\w and \\d, the
SQuAD/LongBench answer normalisation and the UTF-8 decoder's error replacement give, for
tests/eval/test-python-unicode.cpp to compare gsa's ICU-based implementation against. Only the standard library; rerun with any Python 3:

    python3 tests/eval/make-python-unicode-goldens.py > tests/eval/data/python-unicode.json
"""
import json
import re
import string
import sys
import unicodedata


def ranges(pred):
    out, start = [], None
    for cp in range(0x110000):
        if pred(cp):
            if start is None:
                start = cp
        elif start is not None:
            out.append([start, cp - 1])
            start = None
    if start is not None:
        out.append([start, 0x10FFFF])
    return out


def assigned(cp):
    return unicodedata.category(chr(cp)) not in ("Cn", "Cs")


WORD = re.compile(r"\w")
DIGIT = re.compile(r"\d")
PUNCT = set(string.punctuation)


def normalize_answer(s):
    # The four steps LongBench's metrics.py applies, each one Python call.
    s = s.lower()
    s = "".join(ch for ch in s if ch not in PUNCT)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


NORMALIZE = [
    "\u0141azienki", "\u0392\u03b1\u03c3\u03ba\u03b1\u03bd\u03af\u03b1", "\u039f\u0394\u039f\u03a3",
    "\u039f\u0394\u039f\u03a3 \u03a3\u0391\u03a3.", "\u0130stanbul", "the\u20ac cat", "the\u0301 cat",
    "a\u200bcat", "the\u2460 cat", "THE CAT", "The Stra\u00dfe", "\u01c5ivko", "\u216b the", "An \u0686the",
    "the_cat a-an", "\u0531\u0532 \u0410\u0411\u0412 the", "the\u3000cat", "a\u00b2 b", "the\u0663 x",
    "\u1e9e", "\u03a3", "A\u03a3", "A\u03a3\u0301 b", "\ufb03 THE", "\U00010400 the \U0001d7ce",
]

# Ill-formed UTF-8 (hex) as bytes.decode("utf-8", errors="replace") repairs it (Hugging Face's decode does this
# to tokens that split a character).
SANITIZE = ["61e28062", "f09f98", "eda08078", "c0af", "f4908080", "8080", "6f6be282ac", "e080af", "f0", "e282"]

DIGIT_RUNS = ["\uff13 29", "\u0663 and 3", "7\u0661\u0662x", "\u2460 \u00b2 5", "\U0001d7ce\U0001d7cf", "12\u200b34"]

json.dump({
    "python": sys.version.split()[0],
    "unicode": unicodedata.unidata_version,
    "assigned": ranges(assigned),
    "word": ranges(lambda cp: WORD.match(chr(cp)) is not None),
    "decimal": ranges(lambda cp: DIGIT.match(chr(cp)) is not None),
    "lower": [[cp, chr(cp).lower()] for cp in range(0x110000)
              if assigned(cp) and chr(cp).lower() != chr(cp)],
    "normalize": [[s, normalize_answer(s)] for s in NORMALIZE],
    "digit_runs": [[s, re.findall(r"\d+", s)] for s in DIGIT_RUNS],
    "sanitize": [[h, bytes.fromhex(h).decode("utf-8", errors="replace")] for h in SANITIZE],
}, sys.stdout, ensure_ascii=True, separators=(",", ":"))
sys.stdout.write("\n")
