#!/usr/bin/env bash
# First GPU result (docs/results.md, "On the GPU"): the passkey curriculum of the CPU runs, on the GPU.
#   PREFIXES: which recipes, run side by side (default "gpu": the gpu20m preset, 15.7 M parameters, head dim 64,
#     the 8192-token BPE, GSA 8x (unfold, selection per token) and full attention, configs/gpu{256,1k,4k}-*.json).
#   STAGES: the curriculum's stages (default "256 1k 4k"); a stage starts from the previous stage's final/, which
#   may also come from an earlier device call (carry runs/<prefix><stage>-<variant>/final).
#   EVAL_LENGTHS (default "1k 4k 8k"): passkey for every method at the budget L/8 on the last stage's models, on
#   the CPU cores of the same machine (GPU inference is a later issue; none: no evaluation); EVAL_SAMPLES per cell
#   (default 4).
#   TRAIN_SECONDS bounds each training chain (default 480): a stage cut short keeps its last checkpoint.
#   REPEATS=N (N > 1): run-to-run spread instead: the first stage only, N times per variant side by side
#   (runs/<config>-r<i>), same seed and data order, so runs differ only by the GPU's non-deterministic summation
#   order (the attention backward's atomics); no evaluation.
#
#   scripts/gpu-results.sh [GSA_BINARY] [OUT_DIR]
#
# Data: bundle-data/ (ignored, carried to the GPU machine, made here by scripts/gpu-data.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
G=${1:-build/gsa}
OUT=${2:-runs/gpu-results}
mkdir -p "$OUT" runs
# A recipe's config: configs/<name>.json, or configs/experiments/<name>.json once its result is in the docs.
cfg() { if [ -f "configs/$1.json" ]; then echo "configs/$1.json"; else echo "configs/experiments/$1.json"; fi; }
PREFIXES=${PREFIXES:-gpu}
STAGES=${STAGES:-256 1k 4k}
LAST=${STAGES##* }
if [ "${REPEATS:-1}" -gt 1 ]; then
  st=${STAGES%% *}
  for p in $PREFIXES; do for v in ${VARIANTS:-gsa8 full}; do for i in $(seq "$REPEATS"); do
    timeout "${TRAIN_SECONDS:-480}" $G train --config "$(cfg "$p$st-$v")" --out "runs/$p$st-$v-r$i" \
      > "$OUT/train-$p$st-$v-r$i.log" 2>&1 &
  done; done; done
  wait || true
  for d in runs/*-r[0-9]*; do [ -f "$d/log.jsonl" ] && cp "$d/log.jsonl" "$OUT/$(basename "$d").jsonl"; done
  exit 0
fi
for p in $PREFIXES; do
  for v in gsa8 full; do
    (for st in $STAGES; do
       timeout "${TRAIN_SECONDS:-480}" $G train --config "$(cfg "$p$st-$v")" || exit 1
     done) > "$OUT/train-$p-$v.log" 2>&1 &
  done
done
wait || true
for p in $PREFIXES; do for v in gsa8 full; do for st in $STAGES; do
  [ -f "runs/$p$st-$v/log.jsonl" ] && cp "runs/$p$st-$v/log.jsonl" "$OUT/$p$st-$v.jsonl"
done; done; done
# One evaluation per prefix and length, each bounded, so that what finished survives a time limit.
for p in $PREFIXES; do
  tok=bundle-data/tok
  [ -d "runs/$p$LAST-gsa8/final" ] && [ -d "runs/$p$LAST-full/final" ] || continue
  [ "${EVAL_LENGTHS:-}" = none ] && continue
  for L in ${EVAL_LENGTHS:-1k 4k 8k}; do
    timeout "${EVAL_SECONDS:-100}" $G eval --model "runs/$p$LAST-gsa8/final" --full-model "runs/$p$LAST-full/final" \
      --tokenizer $tok --tasks passkey --lengths $L --depths 0.1,0.5,0.9 \
      --methods full,gist,gsa,streaming,quest,moba,h2o --ratios 8 --samples "${EVAL_SAMPLES:-4}" \
      --haystack bundle-data/haystack --json "$OUT/eval-$p$LAST-$L.json" > "$OUT/eval-$p$LAST-$L.md" \
      2> "$OUT/eval-$p$LAST-$L.err" || true
    cat "$OUT/eval-$p$LAST-$L.md"
  done
done
