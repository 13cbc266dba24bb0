#!/usr/bin/env bash
# First GPU result (docs/results.md, "On the GPU"): the passkey curriculum of the CPU runs at a scale the CPU could
# not reach: the gpu20m preset (~16M parameters, head dim 64), GSA 8x (unfold, selection per token) and its
# full-attention twin, 256 tokens (7000 steps of 4 sequences: the CPU runs crossed the copy phase change near step
# 4000), 1k (400 steps of 2), 4k (200 steps of 2), bf16 on one GPU; STAGES="256 1k" stops earlier. Then
# passkey at 1k, 4k and 8k for every method at the budget L/8 (the evaluation runs on the CPU cores of the same
# machine: GPU inference is a later issue).
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
STAGES=${STAGES:-256 1k 4k}
LAST=${STAGES##* }
for v in gsa8 full; do
  (for st in $STAGES; do $G train --config configs/gpu$st-$v.json || exit 1; done) > "$OUT/train-$v.log" 2>&1 &
done
wait
for v in gsa8 full; do for st in $STAGES; do cp runs/gpu$st-$v/log.jsonl "$OUT/gpu$st-$v.jsonl"; done; done
# One evaluation per length, each bounded, so that what finished survives a time limit.
for L in ${EVAL_LENGTHS:-1k 4k 8k}; do
  timeout "${EVAL_SECONDS:-100}" $G eval --model runs/gpu$LAST-gsa8/final --full-model runs/gpu$LAST-full/final \
    --tokenizer bundle-data/tok --tasks passkey --lengths $L --depths 0.1,0.5,0.9 \
    --methods full,gist,gsa,streaming,quest,moba,h2o --ratios 8 --samples "${EVAL_SAMPLES:-4}" \
    --haystack bundle-data/haystack --json "$OUT/eval-gpu$LAST-$L.json" > "$OUT/eval-gpu$LAST-$L.md" 2> "$OUT/eval-gpu$LAST-$L.err"
  cat "$OUT/eval-gpu$LAST-$L.md"
done
