#!/usr/bin/env bash
# The paper's pipeline next to its baselines, in one device call (issue 15 item 2; docs/results.md "The paper's
# pipeline (prepared)"). Three branches on the gpu20m preset (15.7 M parameters), the passkey mix of the gpul*
# recipes, side by side on one GPU:
#   pretraining  gpul256-full (full attention, 12000 x 4 x 256 tokens), from t = 0;
#   GSA CPT      from its final/: cpt256c-gsa8 (compress) -> cpt256u-gsa8 (unfold, selection per token) ->
#                cpt1k-gsa8 -> cpt4k-gsa8 (unfold): the paper's "compress, then unfold" continued pretraining;
#   Full-CPT     from the same final/, the same stages, steps and tokens without gists: cpt256c-fullcpt ->
#                cpt256u-fullcpt -> cpt1k-fullcpt -> cpt4k-fullcpt;
#   GSA scratch  gpul256-gsa8 (12000 steps, from t = 0 beside the pretraining) -> gpul1k-gsa8 -> gpul4k-gsa8, with
#                the CPT branches' 1k / 4k step counts (so the three branches share their 1k and 4k stages).
# Then `gsa eval` on the 4k-stage models (or the deepest stage a branch reached): passkey at EVAL_LENGTHS, ratio 8
# (budget L/8), --ci; the CPT group (--model cpt4k-gsa8 --full-model cpt4k-fullcpt: gsa and gist on the CPT model,
# full and the baselines on the Full-CPT model) and the scratch model (gsa, gist). One `gsa eval` call per (method,
# length), each bounded by the evaluation deadline, so that every cell that finished keeps its JSON and markdown;
# eval-summary.md merges them.
#
#   scripts/gpu-pipeline.sh [GSA_BINARY] [OUT_DIR]
#
# Time: every training stage is bounded by the training deadline (TRAIN_END seconds after the start); a stage cut
# short keeps its last checkpoint (saved every quarter of the stage) and the next stage, or the evaluation, starts
# from that. The scratch model's evaluation starts when its branch ends (the CPT branches may still train), the CPT
# group's when both CPT branches end; every evaluation stops by EVAL_END. Training logs are copied once the CPT
# branches end, and again at the close.
# Knobs (environment):
#   DEVICE (cuda)           --device of every training and evaluation (cpu: a local check of the whole script)
#   RUNS (runs)             where the run folders go (runs/<recipe>, as the recipes' "model" / "out" paths say);
#                           a folder that holds a finished run is not retrained (gsa train resumes from OUT/latest)
#   TIME_LIMIT              the caller's bound on this script (default PIPELINE_TIMEOUT, else 540 s)
#   TRAIN_END, EVAL_END     deadlines in seconds after the start (default TIME_LIMIT - 110, TIME_LIMIT - 15)
#   STEPS_SCALE (1)         multiplies every stage's step count (the recipes' "steps"; at least 1)
#   STEPS_PRE, STEPS_SCR, STEPS_C, STEPS_U, STEPS_1K, STEPS_4K
#                           per-stage steps instead: pretraining 256, scratch 256, compress 256, unfold 256, 1k, 4k
#   EVAL_LENGTHS ("1k 4k 8k"), EVAL_DEPTHS (0.1,0.5,0.9), EVAL_SAMPLES (17 per depth: 51 per cell)
#   EVAL_METHODS ("full gist gsa streaming quest moba"): the CPT group's methods on DEVICE
#   EVAL_SCRATCH_METHODS ("gsa gist"): the scratch model's methods
#   EVAL_JOBS (4): evaluations side by side on the GPU; EVAL_GPU_THREADS (2): OMP threads of each
#   With DEVICE=cuda, on the host's cores (--device cpu): EVAL_CPU_METHODS ("h2o", which the GPU session refuses)
#   at EVAL_CPU_LENGTHS ("1k 4k"); EVAL_XCHECK ("full gsa") at 1k, a cross-check of the GPU's cells through the CPU
#   engine (same models, the first samples); EVAL_CPU_SAMPLES (8 per depth), EVAL_CPU_JOBS (2), EVAL_CPU_THREADS
#   (4). A GPU cell that fails (not a timeout) is run again on the CPU with EVAL_CPU_SAMPLES.
#   EVAL_SECONDS (300): the most one evaluation call may take.
#   GIST_INIT (keep): mean sets the pretrained model's <|gist|> row to the mean row where the GSA CPT starts
#   BPB (1; 0: none), BPB_TEXT, BPB_CONTEXT (2048), BPB_PREDICT (128), BPB_WINDOWS (8): bits/byte on held-out
#   text after the evaluations (gsa perplexity), files bpb-<group>.json / .md
#   TRAIN_THREADS (cores / 3): OMP threads of each training (up to three share the host, as --gpus N gives each
#   rank cores / N).
#
# Data: bundle-data/ (ignored, carried to the GPU machine, made here by scripts/gpu-data.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
G=${1:-build/gsa}
OUT=${2:-runs/gpu-pipeline}
RUNS=${RUNS:-runs}
DEVICE=${DEVICE:-cuda}
TIME_LIMIT=${TIME_LIMIT:-${PIPELINE_TIMEOUT:-540}}
TRAIN_END=${TRAIN_END:-$((TIME_LIMIT - 110))}
EVAL_END=${EVAL_END:-$((TIME_LIMIT - 15))}
X=configs/experiments
TOK=bundle-data/tok
TRAIN_THREADS=${TRAIN_THREADS:-$(( $(nproc) / 3 > 0 ? $(nproc) / 3 : 1 ))}
mkdir -p "$OUT" "$RUNS"
: > "$OUT/timeline.txt"
SECONDS=0  # every deadline counts from here (subshells inherit the clock)

note() { echo "t=${SECONDS}s $*" >> "$OUT/timeline.txt"; echo "[pipeline t=${SECONDS}s] $*"; }

# --- step counts ---------------------------------------------------------------------------------------------------
recipe_steps() { sed -n 's/^ *"steps": *\([0-9]*\).*/\1/p' "$X/$1.json"; }
scaled() {
  awk -v s="$(recipe_steps "$1")" -v k="${STEPS_SCALE:-1}" 'BEGIN { n = int(s * k + 0.5); print (n < 1 ? 1 : n) }'
}
S_PRE=${STEPS_PRE:-$(scaled gpul256-full)}
S_SCR=${STEPS_SCR:-$(scaled gpul256-gsa8)}
S_C=${STEPS_C:-$(scaled cpt256c-gsa8)}
S_U=${STEPS_U:-$(scaled cpt256u-gsa8)}
S_1K=${STEPS_1K:-$(scaled cpt1k-gsa8)}
S_4K=${STEPS_4K:-$(scaled cpt4k-gsa8)}
note "device $DEVICE, $TRAIN_THREADS threads per training; steps: pretraining $S_PRE, scratch $S_SCR," \
  "compress $S_C, unfold $S_U, 1k $S_1K, 4k $S_4K;" \
  "training until ${TRAIN_END}s, evaluations until ${EVAL_END}s"

# --- training ------------------------------------------------------------------------------------------------------
# The model a run left: final/, else (a stage cut short) its latest complete checkpoint; a final/ older than the
# latest checkpoint (a finished run resumed with more steps, then cut) is stale.
model_dir() {
  local d=$RUNS/$1 c
  c=$(cat "$d/latest" 2>/dev/null || true)
  if [ -f "$d/final/model.safetensors" ] && { [ -z "$c" ] || [ "$d/final/model.safetensors" -nt "$d/latest" ]; }; then
    echo "$d/final"; return 0
  fi
  if [ -n "$c" ] && [ -f "$d/$c/model.safetensors" ]; then echo "$d/$c"; return 0; fi
  if [ -f "$d/final/model.safetensors" ]; then echo "$d/final"; return 0; fi
  return 1
}
# The model of the deepest stage a branch reached (the last stage first): a deadline that cut the branch short
# still leaves a model to evaluate; the timeline names which.
deepest_model() {
  local s
  for s in "$@"; do if model_dir "$s"; then return 0; fi; done
  return 1
}

# stage RECIPE STEPS [PREV]: one training stage (run folder $RUNS/RECIPE), from PREV's model when given (gsa train
# --model: continued pretraining; gist rows are added when the model has none and the tokenizer names no gist
# token), bounded by the training deadline. Always returns 0: what a cut stage saved is the next stage's start.
stage() {
  local name=$1 steps=$2 prev=${3:-} left=$((TRAIN_END - SECONDS)) m="" rc=0
  local from=()
  # GIST_INIT=mean: the GSA CPT's first stage sets the pretrained model's <|gist|> row to the mean row (gist_init)
  if [ -n "${GIST_INIT:-}" ] && [ "$name" = cpt256c-gsa8 ]; then from+=(--gist-init "$GIST_INIT"); fi
  # (at least 1 s: timeout 0 would mean no limit)
  if [ "$left" -lt "${MIN_STAGE_SECONDS:-15}" ] || [ "$left" -lt 1 ]; then
    note "$name: skipped, ${left}s before the training deadline"; return 0
  fi
  if [ -n "$prev" ]; then
    m=$(model_dir "$prev") || { note "$name: skipped, $prev left no model"; return 0; }
    from+=(--model "$m")
  fi
  local every=$(( steps >= 4 ? steps / 4 : 1 ))  # in-run evaluation and checkpoint every quarter of the stage
  note "$name: start, $steps steps${m:+ from $m}, at most ${left}s"
  OMP_NUM_THREADS=$TRAIN_THREADS timeout "$left" "$G" train --config "$X/$name.json" --out "$RUNS/$name" \
    --device "$DEVICE" --steps "$steps" --eval-every "$every" --save-every "$every" "${from[@]}" || rc=$?
  note "$name: end, exit $rc$( [ "$rc" = 124 ] && echo ' (cut at the deadline)')"
  return 0
}

chain_cpt() {  # $1: gsa8 (GSA CPT) or fullcpt (Full-CPT); both start from the pretraining's model
  local v=$1
  stage "cpt256c-$v" "$S_C" gpul256-full
  stage "cpt256u-$v" "$S_U" "cpt256c-$v"
  stage "cpt1k-$v" "$S_1K" "cpt256u-$v"
  stage "cpt4k-$v" "$S_4K" "cpt1k-$v"
}

STAGES="gpul256-full gpul256-gsa8 gpul1k-gsa8 gpul4k-gsa8"
for v in gsa8 fullcpt; do STAGES+=" cpt256c-$v cpt256u-$v cpt1k-$v cpt4k-$v"; done
copy_logs() {
  for s in $STAGES; do
    if [ -f "$RUNS/$s/log.jsonl" ]; then cp "$RUNS/$s/log.jsonl" "$OUT/$s.jsonl"; fi
  done
}

# --- evaluation ----------------------------------------------------------------------------------------------------
EVAL_LENGTHS=${EVAL_LENGTHS:-1k 4k 8k}
EVAL_DEPTHS=${EVAL_DEPTHS:-0.1,0.5,0.9}
EVAL_SAMPLES=${EVAL_SAMPLES:-17}
EVAL_CPU_SAMPLES=${EVAL_CPU_SAMPLES:-8}

# eval_cell GROUP METHOD LENGTH DEVICE SAMPLES MODEL [FULL_MODEL]: one gsa eval call, files $OUT/eval-<tag>.*
# (tag GROUP-METHOD-LENGTH, with -cpu when a GPU pipeline runs it on the host). Returns gsa eval's exit code.
eval_cell() {
  local group=$1 meth=$2 L=$3 dev=$4 n=$5 model=$6 full=${7:-} rc=0
  local tag=$group-$meth-$L threads=${EVAL_GPU_THREADS:-2}
  if [ "$dev" != "$DEVICE" ]; then tag+=-$dev; fi
  if [ "$dev" = cpu ]; then threads=${EVAL_CPU_THREADS:-4}; fi
  local left=$((EVAL_END - SECONDS))
  if [ "$left" -gt "${EVAL_SECONDS:-300}" ]; then left=${EVAL_SECONDS:-300}; fi
  if [ "$left" -lt 5 ]; then note "eval $tag: skipped, past the evaluation deadline"; return 0; fi
  local fm=()
  if [ -n "$full" ]; then fm=(--full-model "$full"); fi
  note "eval $tag: start ($n samples per depth, on $dev, at most ${left}s)"
  OMP_NUM_THREADS=$threads timeout "$left" "$G" eval --model "$model" "${fm[@]}" --tokenizer "$TOK" \
    --tasks passkey --lengths "$L" --depths "$EVAL_DEPTHS" --methods "$meth" --ratios 8 --samples "$n" --ci \
    --haystack bundle-data/haystack --device "$dev" --json "$OUT/eval-$tag.json" \
    > "$OUT/eval-$tag.md" 2> "$OUT/eval-$tag.err" || rc=$?
  note "eval $tag: exit $rc$( [ "$rc" = 124 ] && echo ' (cut at the deadline)')"
  return "$rc"
}

# A cell on DEVICE; when the GPU refuses or fails it (anything but a timeout), the same cell on the host's cores.
eval_dev_cell() {
  local rc=0
  eval_cell "$1" "$2" "$3" "$DEVICE" "$EVAL_SAMPLES" "${@:4}" || rc=$?
  if [ "$rc" != 0 ] && [ "$rc" != 124 ] && [ "$DEVICE" != cpu ]; then
    note "eval $1-$2-$3: failed on $DEVICE ($(tail -1 "$OUT/eval-$1-$2-$3.err")); again on the CPU"
    eval_cell "$1" "$2" "$3" cpu "$EVAL_CPU_SAMPLES" "${@:4}" || true
  fi
  return 0
}

pool_wait() { while [ "$(jobs -rp | wc -l)" -ge "$1" ]; do wait -n || true; done; }

# eval_group GROUP "METHODS" JOBS MODEL [FULL_MODEL]: every (length, method) cell on DEVICE, JOBS at a time,
# shortest length first (what the deadline cuts is the longest).
eval_group() {
  local group=$1 methods=$2 jobs=$3 L meth
  for L in $EVAL_LENGTHS; do for meth in $methods; do
    pool_wait "$jobs"
    eval_dev_cell "$group" "$meth" "$L" "${@:4}" &
  done; done
  wait
}

# The host's share with DEVICE=cuda: the methods the GPU session refuses (h2o, group cpt) and a 1k cross-check of
# the GPU's cells on the same models (group xcheck).
eval_cpu_group() {
  local L meth
  for L in ${EVAL_CPU_LENGTHS:-1k 4k}; do for meth in ${EVAL_CPU_METHODS:-h2o}; do
    pool_wait "${EVAL_CPU_JOBS:-2}"
    eval_cell cpt "$meth" "$L" cpu "$EVAL_CPU_SAMPLES" "$@" &
  done; done
  for meth in ${EVAL_XCHECK:-full gsa}; do
    pool_wait "${EVAL_CPU_JOBS:-2}"
    eval_cell xcheck "$meth" 1k cpu "$EVAL_CPU_SAMPLES" "$@" &  # its own tag: a GPU cell's fallback is cpt-*-cpu
  done
  wait
}

# One table over every eval-*.json: rows group / method (device), columns lengths; each cell the n-weighted mean
# over depths in percent, its 95% Wilson interval and n.
summarize() {
  command -v python3 > /dev/null || { note "no python3: no eval-summary.md (the per-cell .md files stand)"; return 0; }
  python3 - "$OUT" > "$OUT/eval-summary.md" <<'EOF' || true
import glob, json, math, os, sys
out = sys.argv[1]
cells, lengths, rows = {}, set(), []
for path in sorted(glob.glob(os.path.join(out, "eval-*.json"))):
    tag = os.path.basename(path)[5:-5]
    group, dev = tag.split("-")[0], " (cpu)" if tag.endswith("-cpu") else ""
    try:
        recs = json.load(open(path))
    except Exception:
        continue
    for r in recs:
        row = f"{group} / {r['method']}" + (f" {r['ratio']:g}x" if r["method"] != "full" else "") + dev
        if row not in rows: rows.append(row)
        c = cells.setdefault((row, r["length"]), [0.0, 0])
        c[0] += r["score"] * r["n"]; c[1] += r["n"]
        lengths.add(r["length"])
def wilson(p, n, z=1.959964):
    d = 1 + z * z / n; m = (p + z * z / (2 * n)) / d; h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, m - h), min(1.0, m + h)
L = sorted(lengths)
print("passkey accuracy, % (95% Wilson interval, n). Group xcheck: the cpt models on the host's cores, a cross-check"
      " of the GPU's cells; (cpu): run with --device cpu. The models:\n")
for line in open(os.path.join(out, "timeline.txt")):
    if line.split(" ", 1)[-1].startswith(("eval cpt: ", "eval scratch: ")): print("* " + line.strip())
print()
print("| group / method | " + " | ".join(str(l) for l in L) + " |")
print("|---|" + "---:|" * len(L))
for row in rows:
    out_cells = []
    for l in L:
        if (row, l) not in cells: out_cells.append("-"); continue
        s, n = cells[(row, l)]; p = s / n; lo, hi = wilson(p, n)
        out_cells.append(f"{100*p:.1f} ({100*lo:.0f}-{100*hi:.0f}, n {n})")
    print(f"| {row} | " + " | ".join(out_cells) + " |")
EOF
}

# --- the pipeline --------------------------------------------------------------------------------------------------
# GSA from scratch, from t = 0 beside the pretraining; its evaluation follows its own training (two cells at a
# time, while the CPT branches still train).
(
  stage gpul256-gsa8 "$S_SCR"
  stage gpul1k-gsa8 "$S_1K" gpul256-gsa8
  stage gpul4k-gsa8 "$S_4K" gpul1k-gsa8
  if m=$(deepest_model gpul4k-gsa8 gpul1k-gsa8 gpul256-gsa8); then
    note "eval scratch: --model $m"
    eval_group scratch "${EVAL_SCRATCH_METHODS:-gsa gist}" 2 "$m"
  else note "eval scratch: no model"; fi
) > "$OUT/train-scratch.log" 2>&1 &

stage gpul256-full "$S_PRE" > "$OUT/train-pretrain.log" 2>&1
chain_cpt gsa8 > "$OUT/train-cpt-gsa8.log" 2>&1 &
cpt=$!
chain_cpt fullcpt > "$OUT/train-cpt-fullcpt.log" 2>&1 &
fullcpt=$!
wait "$cpt" "$fullcpt" || true
copy_logs

if cpt_model=$(deepest_model cpt4k-gsa8 cpt1k-gsa8 cpt256u-gsa8 cpt256c-gsa8) &&
   fullcpt_model=$(deepest_model cpt4k-fullcpt cpt1k-fullcpt cpt256u-fullcpt cpt256c-fullcpt); then
  note "eval cpt: --model $cpt_model --full-model $fullcpt_model"
  if [ "$DEVICE" = cpu ]; then
    (eval_group cpt "${EVAL_METHODS:-full gist gsa streaming quest moba} ${EVAL_CPU_METHODS:-h2o}" \
      "${EVAL_CPU_JOBS:-2}" "$cpt_model" "$fullcpt_model") > "$OUT/eval-cpt.log" 2>&1
  else
    eval_cpu_group "$cpt_model" "$fullcpt_model" > "$OUT/eval-cpu.log" 2>&1 &
    # In a subshell: its pool counts only its own cells, not the scratch chain or the host's cells.
    (eval_group cpt "${EVAL_METHODS:-full gist gsa streaming quest moba}" "${EVAL_JOBS:-4}" \
      "$cpt_model" "$fullcpt_model") > "$OUT/eval-cpt.log" 2>&1
  fi
else
  note "eval cpt: no model of the GSA CPT or the Full-CPT branch"
fi
wait || true  # the scratch chain's evaluation and the host's cells
copy_logs

# Bits per byte on held-out text (issue 15 item 3; gsa perplexity): the essays of bundle-data/haystack, which no
# training shard holds (only the tokenizer saw them), or BPB_TEXT; windows of BPB_CONTEXT tokens prefilled and
# BPB_PREDICT decoded and scored, budget L/8. The CPT group (gsa, gist on the CPT model; full on the Full-CPT model)
# and the scratch model side by side, each bounded by the evaluation deadline.
bpb() {  # bpb TAG METHODS MODEL [FULL_MODEL]
  local tag=$1 meths=$2 model=$3 full=${4:-} left=$((EVAL_END - SECONDS)) rc=0 fm=()
  if [ "$left" -lt 5 ]; then note "bits/byte $tag: skipped, past the evaluation deadline"; return 0; fi
  if [ -n "$full" ]; then fm=(--full-model "$full"); fi
  note "bits/byte $tag: start (at most ${left}s)"
  OMP_NUM_THREADS=${EVAL_GPU_THREADS:-2} timeout "$left" "$G" perplexity --model "$model" "${fm[@]}" --tokenizer "$TOK" \
    --text "${BPB_TEXT:-bundle-data/haystack}" --methods "$meths" --ratios 8 --context "${BPB_CONTEXT:-2048}" \
    --predict "${BPB_PREDICT:-128}" --windows "${BPB_WINDOWS:-8}" --device "$DEVICE" --json "$OUT/bpb-$tag.json" \
    > "$OUT/bpb-$tag.md" 2> "$OUT/bpb-$tag.err" || rc=$?
  note "bits/byte $tag: exit $rc$( [ "$rc" = 124 ] && echo ' (cut at the deadline)')"
}
if [ "${BPB:-1}" != 0 ]; then
  if [ -n "${cpt_model:-}" ] && [ -n "${fullcpt_model:-}" ]; then bpb cpt full,gist,gsa "$cpt_model" "$fullcpt_model" & fi
  if m=$(deepest_model gpul4k-gsa8 gpul1k-gsa8 gpul256-gsa8); then bpb scratch gist,gsa "$m" & fi
  wait || true
  for f in "$OUT"/bpb-*.md; do [ -f "$f" ] && { echo "== $f"; cat "$f"; }; done
fi
summarize
note "done"
cat "$OUT/timeline.txt"
echo; cat "$OUT/eval-summary.md" 2>/dev/null || true
