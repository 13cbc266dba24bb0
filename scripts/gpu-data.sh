#!/usr/bin/env bash
# The data the GPU runs carry (bundle-data/, ignored by git): an 8192-token byte-level BPE trained on the books,
# tinyshakespeare and the essays; token shards of the books, tinyshakespeare and WikiText-2 valid; the books (task
# filler) and the essays (evaluation haystack) as text. DATA defaults to ../shared/data. About 12 MB, 10 s.
#
# CORPUS_MB=N adds the first N MB of the Debian corpus (corpus/train.jsonl, made by scripts/fetch-corpus.sh;
# CORPUS names another folder) to the token shards, its first TOK_CORPUS_MB MB (default 4) to the tokenizer's
# training text, and its held-out text to bundle-data/heldout/ (for gsa perplexity; never in the shards).
# OUT names the output folder (default bundle-data; its tok/, data/ and heldout/ are rebuilt). Shards take 2
# bytes per token (docs/data.md has the sizes).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
G=${GSA:-build/gsa}
CORPUS=${CORPUS:-corpus}
CORPUS_MB=${CORPUS_MB:-0}
TOK_CORPUS_MB=${TOK_CORPUS_MB:-4}
OUT=${OUT:-bundle-data}
tok_extra=() data_extra=()
if [ "$CORPUS_MB" != 0 ]; then
  [ -f "$CORPUS/train.jsonl" ] || { echo "$CORPUS/train.jsonl is missing: run scripts/fetch-corpus.sh" >&2; exit 1; }
  # Whole documents from the start of train.jsonl (its order mixes every package) up to N MB of text.
  python3 - "$CORPUS" "$CORPUS_MB" "$TOK_CORPUS_MB" <<'PY'
import json, sys
corpus, mb, tok_mb = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
n = t = 0
with open(f"{corpus}/train.jsonl") as f, open(f"{corpus}/slice.jsonl", "w") as s, \
        open(f"{corpus}/slice-tok.txt", "w") as tok:
    for line in f:
        if n >= mb * 1e6:
            break
        text = json.loads(line)["text"]
        s.write(line)
        n += len(text.encode())
        if t < tok_mb * 1e6:
            tok.write(text + "\n\n")
            t += len(text.encode())
print(f"corpus slice: {n} bytes of text, {t} of them for the tokenizer", file=sys.stderr)
PY
  tok_extra=("$CORPUS/slice-tok.txt")
  data_extra=("$CORPUS/slice.jsonl")
fi
rm -rf "$OUT/tok" "$OUT/data" "$OUT/heldout"
mkdir -p "$OUT/books" "$OUT/haystack"
$G tokenizer train --vocab 8192 --input $DATA/text/books/*.txt $DATA/text/misc/tinyshakespeare.txt \
  $DATA/text/haystack/*.txt "${tok_extra[@]}" --out "$OUT/tok"
$G data prepare --tokenizer "$OUT/tok" --input $DATA/text/books/*.txt $DATA/text/misc/tinyshakespeare.txt \
  $DATA/text/misc/wikitext2-valid.txt "${data_extra[@]}" --out "$OUT/data"
cp $DATA/text/books/*.txt "$OUT/books/"
cp $DATA/text/haystack/*.txt "$OUT/haystack/"
if [ "$CORPUS_MB" != 0 ]; then
  mkdir -p "$OUT/heldout" && cp "$CORPUS/heldout.txt" "$OUT/heldout/"
fi
du -sh "$OUT"
