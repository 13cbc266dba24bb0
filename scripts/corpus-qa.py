#!/usr/bin/env python3
"""QA over several passages from the corpus's manual pages (called by scripts/fetch-corpus.sh; standard library).

    corpus-qa.py --corpus DIR [--passage-chars 2000]

For every manual page in DIR/train.jsonl and DIR/heldout.jsonl (sources manpages:* and manpages-dev:*) whose NAME
section reads "name[, name...] - summary", one record in the format of `gsa eval --tasks qa --qa-jsonl`:
{"question": "What is the one-line description of NAME in its manual page?", "answers": [summary],
"context": the page's first --passage-chars characters}. The qa task places that passage among the other
records' passages (its distractors, "Document i"), so answering means finding the one page among many.
qa-train.jsonl comes from training documents, qa-heldout.jsonl from held-out ones only; records are in source
order, so both files are byte-identical on every run over the same corpus.
"""
import argparse
import json
import os
import re
import sys

NAME = re.compile(r"^NAME\n((?:[ \t]+\S.*\n)+)", re.M)


def record(text, chars):
    m = NAME.search(text)
    if not m:
        return None
    line = " ".join(m.group(1).split())
    parts = re.split(r"\s+(?:-|\\-|\u2010|\u2013|\u2014)\s+", line, maxsplit=1)
    if len(parts) != 2:
        return None
    names, summary = parts[0].strip(), parts[1].strip().rstrip(".")
    name = names.split(",")[0].strip()
    if not name or len(summary) < 8:
        return None
    return {"question": f"What is the one-line description of {name} in its manual page?", "answers": [summary],
            "context": text[:chars].rstrip()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--passage-chars", type=int, default=2000)
    a = ap.parse_args()
    for split in ("train", "heldout"):
        out, skipped = [], 0
        with open(os.path.join(a.corpus, f"{split}.jsonl")) as f:
            docs = sorted((d["source"], d["text"]) for d in map(json.loads, f)
                          if d["source"].startswith(("manpages:", "manpages-dev:")))
        for source, text in docs:
            r = record(text, a.passage_chars)
            if r is None:
                skipped += 1
                continue
            r["source"] = source
            out.append(json.dumps(r, ensure_ascii=False) + "\n")
        if len(out) < 2:
            sys.exit(f"{split}: {len(out)} QA records from {len(docs)} manual pages; qa needs at least two")
        path = os.path.join(a.corpus, f"qa-{split}.jsonl")
        with open(path + ".tmp", "w") as f:
            f.writelines(out)
        os.replace(path + ".tmp", path)
        print(f"{path}: {len(out)} records from {len(docs)} manual pages ({skipped} without a NAME summary)",
              file=sys.stderr)


if __name__ == "__main__":
    main()
