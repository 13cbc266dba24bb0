#!/usr/bin/env bash
# First GPU result (docs/results.md, "On the GPU"): the passkey curriculum of the CPU runs at a scale the CPU could
# not reach: the gpu20m preset (~19M parameters, head dim 64), GSA 8x (unfold, selection per token) and its
# full-attention twin, 1k tokens (600 steps of 4 sequences) then 4k (300 steps of 2), bf16 on one GPU; then
# passkey at 1k-8k for every method at the budget L/8 (the evaluation runs on the CPU cores of the same machine).
#
#   scripts/gpu-results.sh [GSA_BINARY] [OUT_DIR]
#
# Data: bundle-data/ (ignored, carried to the GPU machine): an 8192-token BPE and token shards of
# ../shared/data's books, tinyshakespeare and WikiText-2 (made here by scripts/gpu-data.sh), the books as task
# filler and the essays as the evaluation haystack.
set -euo pipefail
cd "$(dirname "$0")/.."
G=${1:-build/gsa}
OUT=${2:-runs/gpu-results}
mkdir -p "$OUT" runs
for v in gsa8 full; do
  ( $G train --config configs/gpu1k-$v.json && $G train --config configs/gpu4k-$v.json ) > "$OUT/train-$v.log" 2>&1 &
done
wait
cp runs/gpu4k-gsa8/log.jsonl "$OUT/gpu4k-gsa8.jsonl"; cp runs/gpu4k-full/log.jsonl "$OUT/gpu4k-full.jsonl"
cp runs/gpu1k-gsa8/log.jsonl "$OUT/gpu1k-gsa8.jsonl"; cp runs/gpu1k-full/log.jsonl "$OUT/gpu1k-full.jsonl"
$G eval --model runs/gpu4k-gsa8/final --full-model runs/gpu4k-full/final --tokenizer bundle-data/tok \
  --tasks passkey --lengths 1k,2k,4k,8k --depths 0.1,0.3,0.5,0.7,0.9 \
  --methods full,gist,gsa,streaming,quest,moba,h2o --ratios 8 --samples 4 --haystack bundle-data/haystack \
  --json "$OUT/eval-gpu4k.json" > "$OUT/eval-gpu4k.md" 2> "$OUT/eval-gpu4k.err"
cat "$OUT/eval-gpu4k.md"
tar -C runs -czf "$OUT/models.tar.gz" gpu4k-gsa8/final gpu4k-full/final
