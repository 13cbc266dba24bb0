#!/usr/bin/env bash
# The data the GPU runs carry (bundle-data/, ignored by git): an 8192-token byte-level BPE trained on the books,
# tinyshakespeare and the essays; token shards of the books, tinyshakespeare and WikiText-2 valid; the books (task
# filler) and the essays (evaluation haystack) as text. DATA defaults to ../shared/data. About 12 MB, 10 s.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
G=${GSA:-build/gsa}
mkdir -p bundle-data/books bundle-data/haystack
$G tokenizer train --vocab 8192 --input $DATA/text/books/*.txt $DATA/text/misc/tinyshakespeare.txt \
  $DATA/text/haystack/*.txt --out bundle-data/tok
$G data prepare --tokenizer bundle-data/tok --input $DATA/text/books/*.txt $DATA/text/misc/tinyshakespeare.txt \
  $DATA/text/misc/wikitext2-valid.txt --out bundle-data/data
cp $DATA/text/books/*.txt bundle-data/books/
cp $DATA/text/haystack/*.txt bundle-data/haystack/
