#!/usr/bin/env bash
# The paper's pipeline next to its baselines, in one device call (issue 15; docs/results.md "The paper's pipeline").
# Branches on the gpu20m preset (15.7 M parameters), the passkey mix of the gpul* recipes, side by side on one GPU:
#   pretraining  gpul256-full (full attention, 12000 x 4 x 256 tokens), from t = 0;
#   GSA CPT r    for each compression ratio r of CPT_RATIOS (default 8), from its final/: cpt256c-gsaR (compress) ->
#                cpt256u-gsaR (unfold, selection per token) -> cpt1k-gsaR -> cpt4k-gsaR (unfold): the paper's
#                "compress, then unfold" continued pretraining with chunk r and one gist per chunk (ratio r), in run
#                folders of its own (runs/cpt256c-gsa16 ...). r = 8 trains the committed cpt*-gsa8 recipes; any
#                other r the same recipes with "chunk": [r] and its own folders in "model" / "out", written to
#                OUT/configs/ when the script starts (same stages, steps, tokens, seeds). r = AxB: H-GSA, two
#                levels ("chunk": [A, B], one gist per chunk at each level: ratio A B), folders cpt*-gsaAxB,
#                evaluated with hgsa where the one-level branches use gsa (group cptAxB, budget L / (A B));
#   Full-CPT     (FULLCPT=1) from the same final/, the same stages, steps and tokens without gists:
#                cpt256c-fullcpt -> cpt256u-fullcpt -> cpt1k-fullcpt -> cpt4k-fullcpt;
#   GSA scratch  (SCRATCH=1) gpul256-gsa8 (12000 steps, from t = 0 beside the pretraining) -> gpul1k-gsa8 ->
#                gpul4k-gsa8, with the CPT branches' 1k / 4k step counts (so the branches share their 1k and 4k
#                stages).
# Then `gsa eval` on the 4k-stage models (or the deepest stage a branch reached): passkey at EVAL_LENGTHS, --ci. For
# each ratio r the CPT group cptR at budget L/r (--ratios r): gist and gsa on the GSA CPT r model, the baselines
# (streaming, quest, moba, h2o) on the Full-CPT model (--model cpt4k-gsaR --full-model
# cpt4k-fullcpt); full attention, which no ratio changes, once (group cpt, --model cpt4k-fullcpt); the scratch model
# (gsa, gist) at ratio 8. One `gsa eval` call per (group, method, length), files eval-<group>-<method>-<length>.*
# (eval-cpt16-gsa-4k.json ...), each bounded by the evaluation deadline, so that every cell that finished keeps its
# JSON and markdown; eval-summary.md merges them, one table per ratio (full attention's row in each).
#
#   scripts/gpu-pipeline.sh [GSA_BINARY] [OUT_DIR]
#
# Time: every training stage is bounded by the training deadline (TRAIN_END seconds after the start); a stage cut
# short keeps its last checkpoint (saved every quarter of the stage) and the next stage, or the evaluation, starts
# from that. The scratch model's evaluation starts when its branch ends (the CPT branches may still train), the CPT
# groups' when every CPT branch ends; every evaluation stops by EVAL_END. Training logs are copied once the CPT
# branches end, and again at the close.
# Knobs (environment):
#   DEVICE (cuda)           --device of every training and evaluation (cpu: a local check of the whole script)
#   RUNS (runs)             where the run folders go (runs/<recipe>, as the recipes' "model" / "out" paths say);
#                           a folder that holds a finished run is not retrained (gsa train resumes from OUT/latest)
#   CPT_RATIOS ("8")        the GSA CPT branches, one per ratio r (chunk r, one gist per chunk), e.g. "8 16 32";
#                           AxB for H-GSA (chunk [A, B]), e.g. "16 4x4 32 8x4"; AxBw / AxBf: an H-GSA branch
#                           that trains with the walk / flat selection whatever UNFOLD_SELECT says ("8x2w 8x2f": the
#                           two rules side by side from one pretrained model); a trailing a (AxBa, AxBfa, AxBwa):
#                           "gists": "all", every gist of every level visible to unfolding rows (so a level-0 gist
#                           outside the row's group is attended, and trained, whether or not it is selected); a
#                           trailing u (8u, 8x2fu, 8x2fau): no compress stage, the branch unfolds (per token) from
#                           its first CPT step, its 256 unfold stage taking STEPS_C + STEPS_U steps (the CPU runs
#                           routed best when per-token unfolding started at the first stage, docs/results.md)
#   ROUTE_LOSS, ROUTE_ROWS  every GSA CPT branch trains with the routing distillation ("route_loss": w,
#                           "route_rows": n, default 256; docs/results-gpu.md): its gist scores pulled towards the
#                           attention mass each candidate chunk's raw keys get from the same query
#   SCRATCH (1)             0: no GSA-from-scratch branch, nor its evaluation and bits/byte
#   FULLCPT (1)             0: no Full-CPT branch; the CPT groups then keep only the cells of gist and gsa (full
#                           attention and the baselines need a model without gists)
#   TIME_LIMIT              the caller's bound on this script (default PIPELINE_TIMEOUT, else 540 s)
#   TRAIN_END, EVAL_END     deadlines in seconds after the start (default TIME_LIMIT - 110, TIME_LIMIT - 15)
#   STEPS_SCALE (1)         multiplies every stage's step count (the recipes' "steps"; at least 1)
#   STEPS_PRE, STEPS_SCR, STEPS_C, STEPS_U, STEPS_1K, STEPS_4K
#                           per-stage steps instead: pretraining 256, scratch 256, compress 256, unfold 256, 1k, 4k
#   EVAL_LENGTHS ("1k 4k 8k"), EVAL_DEPTHS (0.1,0.5,0.9), EVAL_SAMPLES (17 per depth: 51 per cell)
#   EVAL_METHODS ("full gist gsa streaming quest moba h2o"): the CPT groups' methods on DEVICE (full once, the others
#   at each ratio; gsa on an AxB branch: hgsa and flat gsa at L/(A B); EVAL_WIDE_BUDGET=1 adds hgsa at L/A,
#   group cptAxBrA)
#   EVAL_SCRATCH_METHODS ("gsa gist"): the scratch model's methods
#   EVAL_JOBS (4): evaluations side by side on the GPU; EVAL_GPU_THREADS (2): OMP threads of each
#   With DEVICE=cuda, on the host's cores (--device cpu): EVAL_CPU_METHODS (none by default; e.g. "h2o" to run
#   it on the host at each ratio) at EVAL_CPU_LENGTHS ("1k 4k"); EVAL_XCHECK ("full gsa"; "" for none) at 1k, a
#   cross-check of the GPU's cells through the CPU engine (same models, the first samples; gsa at each ratio);
#   EVAL_CPU_SAMPLES (8 per depth),
#   EVAL_CPU_JOBS (2), EVAL_CPU_THREADS (4). A GPU cell that fails (not a timeout) is run again on the CPU with
#   EVAL_CPU_SAMPLES.
#   EVAL_SECONDS (300): the most one evaluation call may take.
#   MIX: the training mix of every stage instead of the recipes' passkey mix (their "mix"), e.g.
#   "text=0.2,passkey=0.2,niah_single=0.1,niah_multikey=0.1,niah_multivalue=0.1,niah_multiquery=0.1,
#   variable_tracking=0.1,kv_retrieval=0.1" (the tasks of `gsa eval --tasks`); the rewritten recipes go to OUT/configs
#   EVAL_TASKS (passkey): the tasks of every evaluation cell (comma-separated, as `gsa eval --tasks`), one table
#   per task in eval-summary.md; QA_JSONL: the qa task's source (`gsa eval --qa-jsonl`), needed when qa is listed
#   PRETRAIN_MIN_EXACT (0): the pretrained model's last in-run passkey exact-match rate it must reach (e.g. 0.75);
#   below it the pipeline says so and stops before the CPT branches (PRETRAIN_GATE=stop, the default when set),
#   goes on with a warning (PRETRAIN_GATE=warn), or first trains on (PRETRAIN_GATE=extend: PRETRAIN_EXTEND more
#   steps, default a third of STEPS_PRE, resumed from the last checkpoint with the longer run's schedule, checked
#   again, at most PRETRAIN_EXTENSIONS times, default 2; then stops): a model that does not copy at 256 tokens
#   decides the CPT rows more
#   than the methods do (docs/results.md, run D)
#   SEED_OFFSET (0): added to every stage's seed (the recipes' "seed": init and data order), for repeats of the
#                           whole pipeline that differ only in their draws (the pretraining included)
#   EVAL_UNFOLD_ALL (0): 1 adds gsa at ratio 1 on each GSA CPT model (group cptRall: `gsa eval --ratios 1`, every
#   chunk unfolded), the unfold-everything ablation: the model's own copy with perfect routing
#   EVAL_STAGES (""): e.g. "256c 256u 1k": gsa at EVAL_STAGE_LENGTH (1k) and each branch's ratio on the GSA CPT
#   models at the end of those earlier stages too (groups cptRatS; after the main cells, within the deadline):
#   accuracy and routing per stage, which say when the gists learn to route (compress) and whether unfolding
#   keeps or loses it
#   UNFOLD_SELECT (the config's default, walk): walk | flat, how an AxB ratio's H-GSA CPT selects in training
#   (gsa.unfold_select: the top-down walk hgsa decodes with, or flat level-0 top-k as gsa decodes)
#   GIST_INIT (keep): mean sets the pretrained model's <|gist|> row to the mean row where each GSA CPT starts
#   BPB (1; 0: none), BPB_TEXT, BPB_CONTEXT (2048), BPB_PREDICT (128), BPB_WINDOWS (8): bits/byte on held-out
#   text after the evaluations (gsa perplexity), files bpb-<group>.json / .md: cpt-full (full on the Full-CPT
#   model), cptR (gist, gsa on the GSA CPT r model, budget L/r), scratch (gist, gsa, L/8)
#   TRAIN_THREADS: OMP threads of each training; default the host's cores divided by the most trainings that run
#   at once (the CPT branches beside Full-CPT and scratch: 3 for the defaults, 3 for CPT_RATIOS="16 32"
#   SCRATCH=0), as --gpus N gives each rank cores / N.
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
read -r -a ratios <<< "${CPT_RATIOS-8}"
CPT_RATIOS="${ratios[*]}"  # one space between ratios: "${CPT_RATIOS%% *}" is the first
for r in $CPT_RATIOS; do
  [[ $r =~ ^[1-9][0-9]*(x[1-9][0-9]*[wf]?a?)?u?$ ]] || {
    echo "CPT_RATIOS: '$r' is neither a positive integer (one level) nor AxB (H-GSA, two levels, e.g. 4x4; AxBw /" \
      "AxBf: trained with the walk / flat selection; then a: every gist visible), then optionally u (no compress" \
      "stage)" >&2
    exit 2
  }
done
# A branch's budget ratio (AxB: A B) and the selecting method its group evaluates (AxB: hgsa).
ratio_of() {
  local r=${1%u}
  if [[ $r == *x* ]]; then local b=${r#*x}; b=${b%a}; echo $(( ${r%x*} * ${b%[wf]} )); else echo "$r"; fi
}
select_method_of() { if [[ $1 == *x* ]]; then echo hgsa; else echo gsa; fi; }
SCRATCH=${SCRATCH:-1}
FULLCPT=${FULLCPT:-1}
# The most trainings at once: the CPT branches beside Full-CPT and scratch (before them, pretraining and scratch).
n_train=$(( ${#ratios[@]} + (FULLCPT != 0) + (SCRATCH != 0) ))
if [ "$n_train" -lt $(( 1 + (SCRATCH != 0) )) ]; then n_train=$(( 1 + (SCRATCH != 0) )); fi
TRAIN_THREADS=${TRAIN_THREADS:-$(( $(nproc) / n_train > 0 ? $(nproc) / n_train : 1 ))}
mkdir -p "$OUT" "$RUNS"
: > "$OUT/timeline.txt"
SECONDS=0  # every deadline counts from here (subshells inherit the clock)

note() { echo "t=${SECONDS}s $*" >> "$OUT/timeline.txt"; echo "[pipeline t=${SECONDS}s] $*"; }

# --- the GSA CPT recipes of each ratio -----------------------------------------------------------------------------
# r = 8: the committed configs/experiments/cpt*-gsa8.json. Any other r: the same recipes with "chunk": [r] (one gist
# per chunk: ratio r) and the run folders cpt*-gsaR in "model" / "out" (the --model / --out flags of `stage` name
# the same folders under RUNS), written to OUT/configs/, which comes back with the results.
CFG=$OUT/configs
recipe() { if [ -f "$CFG/$1.json" ]; then echo "$CFG/$1.json"; else echo "$X/$1.json"; fi; }
# MIX: every recipe of the pipeline with that mix, in CFG (the ratios' recipes below derive from these).
if [ -n "${MIX:-}" ]; then
  command -v python3 > /dev/null || { echo "MIX: python3 rewrites the recipes; none here" >&2; exit 2; }
  mkdir -p "$CFG"
  for f in "$X"/gpul256-full.json "$X"/gpul*-gsa8.json "$X"/cpt*-gsa8.json "$X"/cpt*-fullcpt.json; do
    [ -f "$f" ] || continue
    python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
c["mix"] = sys.argv[2]
print(json.dumps(c, indent=2))' "$f" "$MIX" > "$CFG/$(basename "$f")"
  done
fi
for r in $CPT_RATIOS; do
  [ "$r" = 8 ] && [ -z "${ROUTE_LOSS:-}" ] && continue
  command -v python3 > /dev/null || { echo "CPT_RATIOS $r: python3 derives its recipes; none here" >&2; exit 2; }
  mkdir -p "$CFG"
  for s in 256c 256u 1k 4k; do
    python3 -c '
import json, re, sys
c = json.load(open(sys.argv[1]))
r = sys.argv[2]
assert c["gsa"]["chunk"] == [8], c["gsa"]
spec = r[:-1] if r.endswith("u") else r  # u: no compress stage, a matter of the pipeline only
gists_all = spec.endswith("a")
spec = spec[:-1] if gists_all else spec
rule = {"w": "walk", "f": "flat"}.get(spec[-1], sys.argv[3])
c["gsa"]["chunk"] = [int(x) for x in spec.rstrip("wf").split("x")]
if rule:
    c["gsa"]["unfold_select"] = rule
if gists_all:
    c["gsa"]["gists"] = "all"
if sys.argv[4]:
    c["gsa"]["route_loss"] = float(sys.argv[4])
    c["gsa"]["route_rows"] = int(sys.argv[5])
for k in ("model", "out"):
    c[k] = re.sub(r"-gsa8(?=/|$)", "-gsa" + r, c[k])
print(json.dumps(c, indent=2))' "$(recipe "cpt$s-gsa8")" "$r" "${UNFOLD_SELECT:-}" "${ROUTE_LOSS:-}" \
      "${ROUTE_ROWS:-256}" > "$CFG/cpt$s-gsa$r.json"
  done
done

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
note "device $DEVICE; GSA CPT at ratios ${CPT_RATIOS:-(none)}, Full-CPT $FULLCPT, scratch $SCRATCH;" \
  "up to $n_train trainings at once, $TRAIN_THREADS threads each; steps: pretraining $S_PRE,$(
    [ "$SCRATCH" != 0 ] && echo " scratch $S_SCR,") compress $S_C, unfold $S_U, 1k $S_1K, 4k $S_4K;" \
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
  # GIST_INIT=mean: each GSA CPT's first stage sets the pretrained model's <|gist|> row to the mean row (gist_init)
  # (a u branch has no compress stage: its 256 unfold stage is the first)
  if [ -n "${GIST_INIT:-}" ] && [[ $name == cpt256c-gsa* || ($name == cpt256u-gsa* && $name == *u) ]]; then
    from+=(--gist-init "$GIST_INIT")
  fi
  # SEED_OFFSET: the recipe's seed (init and data order) plus the offset, for repeats of the whole pipeline
  local seed
  seed=$(sed -n 's/^ *"seed": *\([0-9]*\).*/\1/p' "$(recipe "$name")")
  if [ "${SEED_OFFSET:-0}" != 0 ]; then from+=(--seed "$(( ${seed:-1234} + SEED_OFFSET ))"); fi
  # (at least 1 s: timeout 0 would mean no limit)
  if [ "$left" -lt "${MIN_STAGE_SECONDS:-15}" ] || [ "$left" -lt 1 ]; then
    note "$name: skipped, ${left}s before the training deadline"; return 0
  fi
  if [ -n "$prev" ]; then
    m=$(model_dir "$prev") || { note "$name: skipped, $prev left no model"; return 0; }
    from+=(--model "$m")
  fi
  local every=$(( steps >= 4 ? steps / 4 : 1 ))  # in-run evaluation and checkpoint every quarter of the stage
  note "$name: start, $steps steps${m:+ from $m}, seed $(( ${seed:-1234} + ${SEED_OFFSET:-0} )), at most ${left}s"
  # At the deadline timeout's SIGTERM makes gsa train write the step it reached (train/stop-signal.h), then exit;
  # a stage still running 30 s later is killed.
  OMP_NUM_THREADS=$TRAIN_THREADS timeout -k 30 "$left" "$G" train --config "$(recipe "$name")" --out "$RUNS/$name" \
    --device "$DEVICE" --steps "$steps" --eval-every "$every" --save-every "$every" "${from[@]}" || rc=$?
  note "$name: end, exit $rc$( [ "$rc" = 124 ] && echo ' (cut at the deadline)')$(last_logged "$RUNS/$name/log.jsonl")"
  return 0
}

# last_logged LOG: ", step N: loss, tokens/s, route_kl..." of a run's last training record ("" without one).
last_logged() {
  python3 - "$1" <<'PY' 2>/dev/null || true
import json, sys
last = None
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "loss" in r and "tokens_per_s" in r: last = r
if last:
    keys = [k for k in sorted(last) if k.startswith("route_kl")]
    print(f", step {last['step']}: loss {last['loss']:.4f}, {last['tokens_per_s']:.0f} tokens/s"
          + "".join(f", {k} {last[k]:.4f}" for k in keys), end="")
PY
}

chain_cpt() {  # $1: gsaR (GSA CPT at ratio R) or fullcpt (Full-CPT); all start from the pretraining's model
  local v=$1
  if [[ $v == gsa*u ]]; then  # no compress stage: per-token unfolding from the first CPT step, as many steps
    stage "cpt256u-$v" "$((S_C + S_U))" gpul256-full
  else
    stage "cpt256c-$v" "$S_C" gpul256-full
    stage "cpt256u-$v" "$S_U" "cpt256c-$v"
  fi
  stage "cpt1k-$v" "$S_1K" "cpt256u-$v"
  stage "cpt4k-$v" "$S_4K" "cpt1k-$v"
}

CPT_VARIANTS=""
for r in $CPT_RATIOS; do CPT_VARIANTS+=" gsa$r"; done
if [ "$FULLCPT" != 0 ]; then CPT_VARIANTS+=" fullcpt"; fi
STAGES="gpul256-full"
if [ "$SCRATCH" != 0 ]; then STAGES+=" gpul256-gsa8 gpul1k-gsa8 gpul4k-gsa8"; fi
for v in $CPT_VARIANTS; do STAGES+=" cpt256c-$v cpt256u-$v cpt1k-$v cpt4k-$v"; done
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

# eval_cell GROUP METHOD LENGTH RATIO DEVICE SAMPLES MODEL [FULL_MODEL]: one gsa eval call at budget L/RATIO, files
# $OUT/eval-<tag>.* (tag GROUP-METHOD-LENGTH, with -cpu when a GPU pipeline runs it on the host; the group names
# the ratio where it matters: cpt8, cpt16, ...). Returns gsa eval's exit code.
eval_cell() {
  local group=$1 meth=$2 L=$3 ratio=$4 dev=$5 n=$6 model=$7 full=${8:-} rc=0
  local tag=$group-$meth-$L threads=${EVAL_GPU_THREADS:-2}
  if [ "$dev" != "$DEVICE" ]; then tag+=-$dev; fi
  if [ "$dev" = cpu ]; then threads=${EVAL_CPU_THREADS:-4}; fi
  local left=$((EVAL_END - SECONDS))
  if [ "$left" -gt "${EVAL_SECONDS:-300}" ]; then left=${EVAL_SECONDS:-300}; fi
  if [ "$left" -lt 5 ]; then note "eval $tag: skipped, past the evaluation deadline"; return 0; fi
  local fm=()
  if [ -n "$full" ]; then fm=(--full-model "$full"); fi
  if [ -n "${QA_JSONL:-}" ]; then fm+=(--qa-jsonl "$QA_JSONL"); fi
  note "eval $tag: start ($n samples per depth, ratio $ratio, on $dev, at most ${left}s)"
  OMP_NUM_THREADS=$threads timeout "$left" "$G" eval --model "$model" "${fm[@]}" --tokenizer "$TOK" \
    --tasks "${EVAL_TASKS:-passkey}" --lengths "$L" --depths "$EVAL_DEPTHS" --methods "$meth" --ratios "$ratio" \
    --samples "$n" --ci \
    --haystack bundle-data/haystack --device "$dev" --json "$OUT/eval-$tag.json" \
    > "$OUT/eval-$tag.md" 2> "$OUT/eval-$tag.err" || rc=$?
  note "eval $tag: exit $rc$( [ "$rc" = 124 ] && echo ' (cut at the deadline)')"
  return "$rc"
}
eval_cpu_cell() { eval_cell "$1" "$2" "$3" "$4" cpu "$EVAL_CPU_SAMPLES" "${@:5}"; }

# eval_dev_cell GROUP METHOD LENGTH RATIO MODEL [FULL_MODEL]: a cell on DEVICE; when the GPU refuses or fails it
# (anything but a timeout), the same cell on the host's cores.
eval_dev_cell() {
  local rc=0
  eval_cell "$1" "$2" "$3" "$4" "$DEVICE" "$EVAL_SAMPLES" "${@:5}" || rc=$?
  if [ "$rc" != 0 ] && [ "$rc" != 124 ] && [ "$DEVICE" != cpu ]; then
    note "eval $1-$2-$3: failed on $DEVICE ($(tail -1 "$OUT/eval-$1-$2-$3.err")); again on the CPU"
    eval_cpu_cell "$@" || true
  fi
  return 0
}

pool_wait() { while [ "$(jobs -rp | wc -l)" -ge "$1" ]; do wait -n || true; done; }

# eval_group GROUP "METHODS" JOBS RATIO MODEL [FULL_MODEL]: every (length, method) cell on DEVICE, JOBS at a time,
# shortest length first (what the deadline cuts is the longest).
eval_group() {
  local group=$1 methods=$2 jobs=$3 L meth
  for L in $EVAL_LENGTHS; do for meth in $methods; do
    pool_wait "$jobs"
    eval_dev_cell "$group" "$meth" "$L" "${@:4}" &
  done; done
  wait
}

# The CPT groups' models, set once the CPT branches end: CPT_MODEL[r] (GSA CPT at ratio r), FULLCPT_MODEL.
declare -A CPT_MODEL=()
FULLCPT_MODEL=""

# cpt_cells RUN PREFIX METHOD LENGTH: the CPT cells of one (method, length), each a background job after
# pool_wait POOL (the caller's). Full attention once (group PREFIX, on the Full-CPT model; its cells do not depend on
# the ratio: --ratios is the first); any other method at each ratio r (group PREFIXr, the GSA CPT r model with the
# Full-CPT model beside it for the baselines), skipped where its model is missing. RUN: eval_dev_cell or
# eval_cpu_cell.
cpt_cells() {
  local run=$1 prefix=$2 meth=$3 L=$4 r
  if [ "$meth" = full ]; then
    if [ -n "$FULLCPT_MODEL" ]; then
      pool_wait "$POOL"
      "$run" "$prefix" full "$L" "$(ratio_of "${CPT_RATIOS%% *}")" "$FULLCPT_MODEL" &
    fi
    return 0
  fi
  case $meth in gist|gsa|hgsa) ;; *) if [ -z "$FULLCPT_MODEL" ]; then return 0; fi ;; esac  # a model without gists
  for r in $CPT_RATIOS; do
    if [ -z "${CPT_MODEL[$r]:-}" ]; then continue; fi
    local ms=$meth m
    # gsa stands for each branch's selecting method: on an H-GSA branch hgsa (the top-down walk) and gsa too (flat
    # over the level-0 gists: the selection its unfold training used, gsa-plans.cpp); hgsa needs a second level
    if [ "$meth" = gsa ] && [[ $r == *x* ]]; then ms="hgsa gsa"; fi
    if [ "$meth" = hgsa ] && [[ $r != *x* ]]; then continue; fi
    for m in $ms; do
      pool_wait "$POOL"
      "$run" "$prefix$r" "$m" "$L" "$(ratio_of "$r")" "${CPT_MODEL[$r]}" ${FULLCPT_MODEL:+"$FULLCPT_MODEL"} &
    done
    # EVAL_WIDE_BUDGET=1: hgsa at L/A too (group cptAxBrA), four times the budget, the one a model trained before
    # the adaptive rule counted H-GSA's whole ratio (docs/results.md, run F) was trained with.
    if [ "$meth" = gsa ] && [[ $r == *x* ]] && [ "${EVAL_WIDE_BUDGET:-0}" != 0 ]; then
      pool_wait "$POOL"
      "$run" "$prefix${r}r${r%x*}" hgsa "$L" "${r%x*}" "${CPT_MODEL[$r]}" ${FULLCPT_MODEL:+"$FULLCPT_MODEL"} &
    fi
    # EVAL_UNFOLD_ALL=1: gsa at ratio 1 too (group cptRall), every chunk unfolded: the GSA model's copy with
    # perfect routing, which says whether a missed needle is the router's fault or the model's.
    if [ "$meth" = gsa ] && [ "${EVAL_UNFOLD_ALL:-0}" != 0 ]; then
      pool_wait "$POOL"
      "$run" "$prefix${r}all" gsa "$L" 1 "${CPT_MODEL[$r]}" ${FULLCPT_MODEL:+"$FULLCPT_MODEL"} &
    fi
  done
  return 0
}

# eval_cpt_groups "METHODS" JOBS: every CPT cell on DEVICE, JOBS at a time, shortest length first.
eval_cpt_groups() {
  local POOL=$2 L meth
  for L in $EVAL_LENGTHS; do for meth in $1; do cpt_cells eval_dev_cell cpt "$meth" "$L"; done; done
  wait
}

# The host's share with DEVICE=cuda: EVAL_CPU_METHODS (groups cptR) and a 1k cross-check of
# the GPU's cells on the same models (groups xcheck, xcheckR).
eval_cpu_group() {
  local POOL=${EVAL_CPU_JOBS:-2} L meth
  for L in ${EVAL_CPU_LENGTHS:-1k 4k}; do for meth in ${EVAL_CPU_METHODS-}; do
    cpt_cells eval_cpu_cell cpt "$meth" "$L"
  done; done
  for meth in ${EVAL_XCHECK-full gsa}; do
    cpt_cells eval_cpu_cell xcheck "$meth" 1k  # its own tags: a GPU cell's fallback is cpt*-*-cpu
  done
  wait
}

# One table per ratio over every eval-*.json: rows group / method (device), columns lengths; each cell the
# n-weighted mean over depths in percent, its 95% Wilson interval and n. Full attention's rows (no ratio) stand in
# every table.
summarize() {
  command -v python3 > /dev/null || { note "no python3: no eval-summary.md (the per-cell .md files stand)"; return 0; }
  python3 - "$OUT" > "$OUT/eval-summary.md" <<'EOF' || true
import glob, json, math, os, re, sys
out = sys.argv[1]
cells, lengths, rows, tasks = {}, set(), {}, []  # rows: label -> ratio (None: full attention)
for path in sorted(glob.glob(os.path.join(out, "eval-*.json"))):
    tag = os.path.basename(path)[5:-5]
    group, dev = tag.split("-")[0], " (cpu)" if tag.endswith("-cpu") else ""
    try:
        recs = json.load(open(path))
    except Exception:
        continue
    for r in recs:
        full = r["method"] == "full"
        row = f"{group} / {r['method']}" + ("" if full else f" {r['ratio']:g}x") + dev
        rows.setdefault(row, None if full else r["ratio"])
        task = r.get("task", "passkey")
        if task not in tasks: tasks.append(task)
        c = cells.setdefault((task, row, r["length"]), [0.0, 0, 0.0, 0, 0.0, 0])
        c[0] += r["score"] * r["n"]; c[1] += r["n"]
        if r.get("routing_n", 0) > 0: c[2] += r["routing"] * r["routing_n"]; c[3] += r["routing_n"]
        if r.get("routing_any", -1) >= 0: c[4] += r["routing_any"] * r["routing_n"]; c[5] += r["routing_n"]
        lengths.add(r["length"])
def wilson(p, n, z=1.959964):
    d = 1 + z * z / n; m = (p + z * z / (2 * n)) / d; h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, m - h), min(1.0, m + h)
L = sorted(lengths)
print(", ".join(tasks or ["passkey"]) + " accuracy, % (95% Wilson interval, n): one table per task and ratio."
      " Groups: cpt, full attention on the Full-CPT model (no ratio:"
      " in every table); cptR, gist / gsa (hgsa for AxB) on the GSA CPT model of ratio R and the baselines on the"
      " Full-CPT model, budget L/R; scratch, GSA from scratch (8x); xcheck*, the cpt models on the host's cores, a cross-check of the"
      " GPU's cells; cptRatS, gsa on the GSA CPT model of ratio R at the end of its stage S (EVAL_STAGES);"
      " (cpu): run with --device cpu. \"routed\": the needle-selected figure, % of the layer x KV-head selections"
      " at the question's last row that picked the chunk holding the answer (\"any\": % of the samples where at"
      " least one did; per layer: the eval-*.md files). The models:\n")
for line in open(os.path.join(out, "timeline.txt")):
    if re.match(r"(eval (cpt[0-9xwf]*(at[0-9a-z]+)?|scratch): )", line.split(" ", 1)[-1]): print("* " + line.strip())
ratios = sorted({x for x in rows.values() if x is not None}) or [None]
for task in tasks:
  for ratio in ratios:
    print()
    print(f"#### {task}" + (f", {ratio:g}x (budget L/{ratio:g})" if ratio is not None else "") + "\n")
    print("| group / method | " + " | ".join(str(l) for l in L) + " |")
    print("|---|" + "---:|" * len(L))
    for row, rr in rows.items():
        if rr is not None and rr != ratio: continue
        out_cells = []
        for l in L:
            if (task, row, l) not in cells: out_cells.append("-"); continue
            s, n, rs, rn, ra, an = cells[(task, row, l)]; p = s / n; lo, hi = wilson(p, n)
            routed = (f", routed {100*rs/rn:.0f}%" if rn else "") + (f", any {100*ra/an:.0f}%" if an else "")
            out_cells.append(f"{100*p:.1f} ({100*lo:.0f}-{100*hi:.0f}, n {n}{routed})")
        print(f"| {row} | " + " | ".join(out_cells) + " |")
EOF
}

# --- the pipeline --------------------------------------------------------------------------------------------------
# GSA from scratch, from t = 0 beside the pretraining; its evaluation follows its own training (two cells at a
# time, while the CPT branches still train).
if [ "$SCRATCH" != 0 ]; then
  (
    stage gpul256-gsa8 "$S_SCR"
    stage gpul1k-gsa8 "$S_1K" gpul256-gsa8
    stage gpul4k-gsa8 "$S_4K" gpul1k-gsa8
    if m=$(deepest_model gpul4k-gsa8 gpul1k-gsa8 gpul256-gsa8); then
      note "eval scratch: --model $m"
      eval_group scratch "${EVAL_SCRATCH_METHODS:-gsa gist}" 2 8 "$m"
    else note "eval scratch: no model"; fi
  ) > "$OUT/train-scratch.log" 2>&1 &
fi

stage gpul256-full "$S_PRE" > "$OUT/train-pretrain.log" 2>&1
# The copy check of the pretrained model (PRETRAIN_MIN_EXACT): its last in-run passkey exact-match rate.
pretrain_exact() {
  python3 -c '
import json, sys
last = None
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "passkey" in r.get("tasks", {}): last = r["tasks"]["passkey"]["exact"]
print("none" if last is None else last)' "$RUNS/gpul256-full/log.jsonl" 2>/dev/null || echo none
}
if [ -n "${PRETRAIN_MIN_EXACT:-}" ]; then
  pre_steps=$S_PRE extensions=0
  while :; do
    exact=$(pretrain_exact)
    if [ "$exact" = none ] || awk -v e="$exact" -v m="$PRETRAIN_MIN_EXACT" 'BEGIN { exit !(e < m) }'; then
      note "pretrained model: in-run passkey exact $exact, below PRETRAIN_MIN_EXACT $PRETRAIN_MIN_EXACT"
      if [ "${PRETRAIN_GATE:-stop}" = extend ] && [ "$extensions" -lt "${PRETRAIN_EXTENSIONS:-2}" ]; then
        extensions=$((extensions + 1))
        pre_steps=$((pre_steps + ${PRETRAIN_EXTEND:-$(( (S_PRE + 2) / 3 ))}))
        note "pretraining extended to $pre_steps steps (PRETRAIN_GATE=extend, $extensions of ${PRETRAIN_EXTENSIONS:-2})"
        stage gpul256-full "$pre_steps" >> "$OUT/train-pretrain.log" 2>&1
        continue
      fi
      if [ "${PRETRAIN_GATE:-stop}" != warn ]; then
        copy_logs
        note "stopped before the CPT branches (PRETRAIN_GATE=${PRETRAIN_GATE:-stop}, $extensions extensions): try" \
          "another SEED_OFFSET, more STEPS_PRE or PRETRAIN_GATE=extend"
        exit 3
      fi
    else
      note "pretrained model: in-run passkey exact $exact (PRETRAIN_MIN_EXACT $PRETRAIN_MIN_EXACT): copies"
    fi
    break
  done
fi
branches=()
for v in $CPT_VARIANTS; do
  chain_cpt "$v" > "$OUT/train-cpt-$v.log" 2>&1 &
  branches+=($!)
done
for p in "${branches[@]}"; do wait "$p" || true; done
copy_logs

if [ "$FULLCPT" != 0 ]; then
  if FULLCPT_MODEL=$(deepest_model cpt4k-fullcpt cpt1k-fullcpt cpt256u-fullcpt cpt256c-fullcpt); then
    note "eval cpt: full and the baselines on --full-model $FULLCPT_MODEL"
  else
    FULLCPT_MODEL=""; note "eval cpt: no model of the Full-CPT branch: no cells of full and the baselines"
  fi
fi
for r in $CPT_RATIOS; do
  if m=$(deepest_model "cpt4k-gsa$r" "cpt1k-gsa$r" "cpt256u-gsa$r" "cpt256c-gsa$r"); then
    CPT_MODEL[$r]=$m
    note "eval cpt$r: --model $m${FULLCPT_MODEL:+ --full-model $FULLCPT_MODEL} --ratios $(ratio_of "$r")"
  else
    note "eval cpt$r: no model of the GSA CPT ${r}x branch"
  fi
done
if [ "$DEVICE" = cpu ]; then
  (eval_cpt_groups "${EVAL_METHODS:-full gist gsa streaming quest moba h2o} ${EVAL_CPU_METHODS-}" \
    "${EVAL_CPU_JOBS:-2}") > "$OUT/eval-cpt.log" 2>&1
else
  eval_cpu_group > "$OUT/eval-cpu.log" 2>&1 &
  # In a subshell: its pool counts only its own cells, not the scratch chain or the host's cells.
  (eval_cpt_groups "${EVAL_METHODS:-full gist gsa streaming quest moba h2o}" "${EVAL_JOBS:-4}") \
    > "$OUT/eval-cpt.log" 2>&1
fi
wait || true  # the scratch chain's evaluation and the host's cells
# EVAL_STAGES: the earlier stages' GSA CPT models, gsa at each branch's ratio (group cptRatS).
if [ -n "${EVAL_STAGES:-}" ]; then
  (
    POOL=${EVAL_JOBS:-4}
    for st in $EVAL_STAGES; do for r in $CPT_RATIOS; do
      m="$RUNS/cpt$st-gsa$r/final"
      if [ ! -d "$m" ]; then note "eval cpt${r}at$st: no model $m"; continue; fi
      note "eval cpt${r}at$st: --model $m --ratios $(ratio_of "$r")"
      pool_wait "$POOL"
      eval_dev_cell "cpt${r}at$st" gsa "${EVAL_STAGE_LENGTH:-1k}" "$(ratio_of "$r")" "$m" &
    done; done
    wait
  ) > "$OUT/eval-stages.log" 2>&1
fi
copy_logs

# Bits per byte on held-out text (issue 15 item 3; gsa perplexity): the essays of bundle-data/haystack, which no
# training shard holds (only the tokenizer saw them), or BPB_TEXT; windows of BPB_CONTEXT tokens prefilled and
# BPB_PREDICT decoded and scored, budget L/r. Full attention on the Full-CPT model (cpt-full), gist and gsa on each
# GSA CPT model at its ratio (cptR) and on the scratch model at 8, side by side, each bounded by the evaluation
# deadline.
bpb() {  # bpb TAG METHODS RATIO MODEL [FULL_MODEL]
  local tag=$1 meths=$2 ratio=$3 model=$4 full=${5:-} left=$((EVAL_END - SECONDS)) rc=0 fm=()
  if [ "$left" -lt 5 ]; then note "bits/byte $tag: skipped, past the evaluation deadline"; return 0; fi
  if [ -n "$full" ]; then fm=(--full-model "$full"); fi
  note "bits/byte $tag: start (--methods $meths --ratios $ratio --model $model${full:+ --full-model $full}," \
    "at most ${left}s)"
  OMP_NUM_THREADS=${EVAL_GPU_THREADS:-2} timeout "$left" "$G" perplexity --model "$model" "${fm[@]}" --tokenizer "$TOK" \
    --text "${BPB_TEXT:-bundle-data/haystack}" --methods "$meths" --ratios "$ratio" --context "${BPB_CONTEXT:-2048}" \
    --predict "${BPB_PREDICT:-128}" --windows "${BPB_WINDOWS:-8}" --device "$DEVICE" --json "$OUT/bpb-$tag.json" \
    > "$OUT/bpb-$tag.md" 2> "$OUT/bpb-$tag.err" || rc=$?
  note "bits/byte $tag: exit $rc$( [ "$rc" = 124 ] && echo ' (cut at the deadline)')"
}
if [ "${BPB:-1}" != 0 ]; then
  # (--full-model too: the table's model column then says full)
  if [ -n "$FULLCPT_MODEL" ]; then
    bpb cpt-full full "$(ratio_of "${CPT_RATIOS%% *}")" "$FULLCPT_MODEL" "$FULLCPT_MODEL" &
  fi
  for r in $CPT_RATIOS; do
    if [ -n "${CPT_MODEL[$r]:-}" ]; then
      bpb "cpt$r" "gist,$(select_method_of "$r")" "$(ratio_of "$r")" "${CPT_MODEL[$r]}" &
    fi
  done
  if [ "$SCRATCH" != 0 ] && m=$(deepest_model gpul4k-gsa8 gpul1k-gsa8 gpul256-gsa8); then
    bpb scratch gist,gsa 8 "$m" &
  fi
  wait || true
  for f in "$OUT"/bpb-*.md; do [ -f "$f" ] && { echo "== $f"; cat "$f"; }; done
fi
summarize
note "done"
cat "$OUT/timeline.txt"
echo; cat "$OUT/eval-summary.md" 2>/dev/null || true
