#!/usr/bin/env bash
# Everything CUDA on the GPU machine in one go (one device call): builds nothing, runs every CUDA test and every
# GPU benchmark from the bundle that scripts/cuda-bundle.sh made here, and writes the logs to $OUT.
#
#   scripts/cuda-bundle.sh                                  # here: build with nvcc, pack bundle/ (~20 MB)
#   OUT=/some/dir scripts/device-run.sh [steps]             # there, from the repo root, with bundle/ carried
#
# steps (default: all but hf-decode, first-result, serve and multigpu): goldens tests attention train profile torch decode
# hf-decode first-result serve (carry bundle-data/ too) ncu (NCU_PREFILL: selection kernels in a prefill)
# decode-layer decode-profile decode-long decode-offload prefill route (ROUTE_SHAPES) pipeline (carry bundle-data/ too) multigpu (2 GPUs: kind nvidia-h200-x2; also carry bundle-data/). The GPU machine has CUDA, PyTorch and
# transformers but none of our Debian libraries (they travel in bundle/lib) and no network.
# $OUT gets: device-log.txt (everything printed) and results.tar.gz (JSON of each benchmark, gtest's JSON, the
# head-dim-64 transformers goldens made there, the first-result training log).
# Knobs: BUNDLE_TAR (bundle/gsa-only.tar.xz, gsa without the tests and benchmarks, for the pipeline: carry it and
# bundle-data/ and not gsa-bundle.tar.xz, or the call passes the device's 64 MiB working-tree limit; another bundle, e.g. a build of the previous commit for an A/B in one call: copy it under
# bundle/ after scripts/cuda-bundle.sh, which recreates that folder, and carry it too), TEST_FILTER (gtest filter
# of the tests step), TEST_TIMEOUT, ATTN_LENGTHS / ATTN_PLANS (attention step),
# LONG_AB_CONTEXTS / LONG_AB_ENV (decode-long: contexts also timed under that environment, by default
# GSA_CUDA_GRAPHS=0 GSA_CUDA_GEMV=0; "" skips), TRAIN_SHAPES, PROFILE_SHAPES / PROFILE_MODES / PROFILE_ARGS (more bench train flags) / PROFILE_BREAKDOWN (0: plain
# step timings, no per-op synchronisation), and those of scripts/gpu-results.sh for first-result.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gsa-device-out}
STEPS=${*:-goldens tests attention train torch decode}
RES=${RES_DIR:-/tmp/gsa-res}  # several device-run.sh side by side: give each its own OUT, RES_DIR and BUNDLE_DIR
mkdir -p "$OUT" "$RES"
LOG="$OUT/device-log.txt"
exec > >(tee -a "$LOG") 2>&1
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
has() { [[ " $STEPS " == *" $1 "* ]]; }
section() { echo; echo "=== $* ($(date +%T))"; }

section machine
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'

# The bundle: binaries + the Debian shared objects; cuBLASLt from this machine's CUDA or PyTorch's wheel.
BUNDLE=${BUNDLE_DIR:-/tmp/gsa-bundle}
rm -rf "$BUNDLE" && mkdir -p "$BUNDLE"
tar -C "$BUNDLE" -xJf "${BUNDLE_TAR:-bundle/gsa-bundle.tar.xz}" || { echo "no bundle: run scripts/cuda-bundle.sh and carry bundle/"; exit 1; }
CUBLAS_DIR=$(dirname "$(ls /usr/local/cuda/lib64/libcublasLt.so.13 /usr/local/cuda*/lib64/libcublasLt.so.13 2>/dev/null | head -1)" 2>/dev/null)
if [ -z "$CUBLAS_DIR" ] || [ "$CUBLAS_DIR" = . ]; then
  CUBLAS_DIR=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null)
fi
export LD_LIBRARY_PATH="$BUNDLE/lib:$CUBLAS_DIR:${LD_LIBRARY_PATH:-}"
export GSA_SOURCE_DIR=$PWD
# NCCL for the data-parallel test and step (gsa loads it at run time): PyTorch's wheel unless given.
if [ -z "${GSA_NCCL_LIBRARY:-}" ]; then
  GSA_NCCL_LIBRARY=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null)
  [ -n "$GSA_NCCL_LIBRARY" ] && export GSA_NCCL_LIBRARY && echo "NCCL from $GSA_NCCL_LIBRARY"
fi
echo "cuBLASLt from $CUBLAS_DIR"
GSA=$BUNDLE/bin/gsa

if has goldens; then
  section "transformers goldens with head dim 64 (scripts/make-goldens.py)"
  timeout 120 python3 scripts/make-goldens.py /tmp/goldens && for d in llama-d64 llama-d64-gist qwen2-d64; do
    rm -rf "tests/data/golden/$d" && cp -r "/tmp/goldens/$d" tests/data/golden/
  done
  tar -C tests/data/golden -czf $RES/goldens-d64.tar.gz llama-d64 llama-d64-gist qwen2-d64 2>/dev/null
fi

if has tests; then
  section "test_cuda (every CUDA test; CPU references inside)"
  timeout "${TEST_TIMEOUT:-240}" "$BUNDLE/bin/test_cuda" --gtest_filter="${TEST_FILTER:-*}" --gtest_output=json:$RES/test_cuda.json
  echo "test_cuda exit code: $?"
fi

if has attention; then
  section "one GSA attention layer fwd+bwd, bf16, 16 heads, d 128 (bench-gsa-attention)"
  timeout 300 "$BUNDLE/bin/bench-gsa-attention" --lengths "${ATTN_LENGTHS:-8k,16k,32k,64k,128k}" --kv-heads 16,4 \
    --plans "${ATTN_PLANS:-causal,c16g1,c64g4,unfold16}" --json $RES/bench-attention.json
  echo "bench-gsa-attention exit code: $?"
fi

if has train; then
  section "training step of the 125M Llama shape on the GPU (gsa bench train --device cuda)"
  for cfg in ${TRAIN_SHAPES:-4096x4 16384x1}; do
    set -- ${cfg/x/ }
    timeout 150 "$GSA" bench train --device cuda --preset llama125m --tokens "$1" --batch "$2" \
      --modes full,compress,unfold --chunk 16 --reps 5 --json >"$RES/train-$1.json"
    echo "tokens $1 batch $2: exit $? $(cat $RES/train-$1.json)"
  done
fi

if has profile; then
  section "where a training step's attention time goes (GSA_TRAIN_PROFILE=1 gsa bench train), 125M and gpu20m shapes"
  # preset:TOKENSxBATCH:CHUNK (the 125M rows as in "train"; gpu20m with the first-result recipe's c = 8)
  for cfg in ${PROFILE_SHAPES:-llama125m:4096x4:16 llama125m:16384x1:16 gpu20m:256x4:8 gpu20m:1024x2:8 gpu20m:4096x2:8}; do
    IFS=: read -r preset shape chunk <<<"$cfg"; set -- ${shape/x/ }
    GSA_TRAIN_PROFILE=${PROFILE_BREAKDOWN:-1} timeout 120 "$GSA" bench train --device cuda --preset "$preset" --tokens "$1" --batch "$2" \
      --modes ${PROFILE_MODES:-full,compress,unfold} --chunk "${chunk:-16}" --reps 5 ${PROFILE_ARGS:-} \
      --json >"$RES/profile-$preset-$1.json"
    echo "$preset tokens $1 batch $2: exit $? $(cat $RES/profile-$preset-$1.json)"
  done
fi

if has route; then
  section "the routing distillation's cost: gpu20m training steps with and without route_loss (gsa bench train)"
  # Run O's GSA branch (H-GSA 8 x 2, flat selection, every gist visible, per-token unfolding) at each CPT length.
  for cfg in ${ROUTE_SHAPES:-256x4 1024x2 4096x2}; do
    set -- ${cfg/x/ }
    for w in 0 1; do
      timeout 120 "$GSA" bench train --device cuda --preset gpu20m --tokens "$1" --batch "$2" --modes unfold \
        --chunk 8,2 --gists all --unfold-select flat --route-loss $w --reps 10 --json >"$RES/route-$1-w$w.json"
      echo "tokens $1 batch $2 route_loss $w: exit $? $(cat $RES/route-$1-w$w.json)"
    done
  done
fi

# What each ncu run collects: what bounds the kernel (SOL), why warps wait, occupancy.
ncu_sections=(--section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats
  --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section SchedulerStats)
if has ncu && [ -n "${NCU_PREFILL:-}" ]; then
  # NCU_PREFILL="kernel@flags;kernel@flags": one launch of each kernel (the NCU_SKIP + 1-th, default 4th) inside
  # an unfolding prefill of the llama1b preset (gsa bench decode --prefill --prefill-mode unfold FLAGS), e.g.
  # "walk_kernel@--method hgsa --context 32k;topk_warp_kernel@--method gsa --chunks 16 --context 32k".
  section "hardware counters of selection kernels in the unfolding prefill (ncu)"
  IFS=';' read -r -a ncu_runs <<<"$NCU_PREFILL"
  for spec in "${ncu_runs[@]}"; do
    kn=${spec%%@*}; flags=${spec#*@}
    # shellcheck disable=SC2086  # flags are words
    timeout 150 ncu --clock-control none --kernel-name "regex:$kn" --launch-skip "${NCU_SKIP:-3}" --launch-count 1 \
      "${ncu_sections[@]}" --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
      "$GSA" bench decode --device cuda --preset llama1b --prefill --steps 1 --prefill-mode unfold $flags \
      >$RES/ncu-prefill-$kn.txt 2>&1
    echo "--- $kn ($flags): exit $?"; grep -v "^==PROF==" $RES/ncu-prefill-$kn.txt | awk '!/stalled/ || $NF+0 > 0.05' | tail -150
  done
fi

if has ncu && [ -z "${NCU_PREFILL:-}" ]; then
  section "hardware counters of the structured attention kernels, 32k c64g4 16 heads (ncu; Firecracker machines only)"
  # One launch of each kernel after the warm-up; what bounds it (SOL), why warps wait, occupancy.
  for kn in ${NCU_KERNELS:-fwd_structured_kernel bwd_structured_kernel bwd_keymajor_kernel}; do
    timeout 120 ncu --clock-control none --kernel-name "regex:$kn" --launch-skip 1 --launch-count 1 \
      "${ncu_sections[@]}" "$BUNDLE/bin/bench-gsa-attention" --lengths ${NCU_LENGTH:-32k} --kv-heads 16 --plans c64g4 --reps 1 \
      >$RES/ncu-$kn.txt 2>&1
    echo "--- $kn: exit $?"; grep -v "^==PROF==" $RES/ncu-$kn.txt | tail -120
    # Why warps wait, per reason (cycles per issued instruction), and the busiest pipes.
    timeout 120 ncu --clock-control none --kernel-name "regex:$kn" --launch-skip 1 --launch-count 1 \
      --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active" \
      "$BUNDLE/bin/bench-gsa-attention" --lengths ${NCU_LENGTH:-32k} --kv-heads 16 --plans c64g4 --reps 1 \
      >$RES/ncu-stall-$kn.txt 2>&1
    echo "--- $kn stalls: exit $?"; grep -v "^==PROF==" $RES/ncu-stall-$kn.txt | awk '$NF+0 > 0.05' | tail -60
  done
fi

if has torch; then
  section "PyTorch references (same shapes)"
  timeout 170 python3 scripts/bench-torch-attention.py --lengths "${ATTN_LENGTHS:-8k,16k,32k,64k,128k}" \
    --max-seconds 3 --total-seconds 140 --json $RES/torch-attention.json
  timeout 120 python3 scripts/bench-torch-train.py --json $RES/torch-train.json
fi

if has decode; then
  section "decode attention over gathered key lists (bench-decode-attention, docs/decode.md)"
  mkdir -p /tmp/xcheck
  timeout 120 "$BUNDLE/bin/bench-decode-attention" --check --dump /tmp/xcheck --bench
  echo "bench-decode-attention exit code: $?"
  timeout 60 python3 scripts/sdpa-reference.py /tmp/xcheck
fi

if has decode-layer; then
  section "one decode layer to 1M keys, Llama-3.2-1B and Qwen2-7B shapes, batch 1: ours (full, GSA list) and torch SDPA (full)"
  timeout 240 "$BUNDLE/bin/bench-decode-attention" --bench-long
  echo "bench-decode-attention --bench-long exit code: $?"
  timeout 180 python3 scripts/sdpa-reference.py --long
  echo "sdpa-reference.py --long exit code: $?"
fi

if has decode-profile; then
  section "where a batched decode step's time goes (GSA_DECODE_PROFILE=1 gsa bench decode --device cuda, the small preset)"
  for b in ${DECODE_BATCHES:-1 8 32}; do
    GSA_DECODE_PROFILE=1 timeout 120 "$GSA" bench decode --device cuda --preset small --context 1k --method gsa \
      --batch "$b" --steps 8 --json >$RES/decode-profile-b$b.json 2>$RES/decode-profile-b$b.err
    echo "batch $b: exit $? $(cat $RES/decode-profile-b$b.json)"; tail -4 $RES/decode-profile-b$b.err
    # The same cell without the profile's synchronisations: the step's real speed.
    timeout 120 "$GSA" bench decode --device cuda --preset small --context 1k --method gsa --batch "$b" --steps 16 \
      --json >$RES/decode-plain-b$b.json 2>/dev/null
    echo "batch $b without the profile: exit $? $(cat $RES/decode-plain-b$b.json)"
  done
fi

if has decode-long; then
  section "whole-model decode at long contexts, Llama-3.2-1B shape, random weights and K/V (gsa bench decode --preset llama1b)"
  # Profiled (GSA_DECODE_PROFILE: phases per step, the device lists' kernels inside the attention phase), then plain.
  GSA_DECODE_PROFILE=1 timeout 200 "$GSA" bench decode --device cuda --preset llama1b \
    --context "${LONG_PROFILE_CONTEXTS:-128k,512k}" --method "${LONG_METHODS:-full,gsa,hgsa}" --steps 4 \
    --json >$RES/decode-long-profile.json 2>$RES/decode-long-profile.err
  echo "profiled: exit $?"; grep -E "decode-profile" $RES/decode-long-profile.err | awk 'NR % 4 == 0'
  timeout 300 "$GSA" bench decode --device cuda --preset llama1b --context "${LONG_CONTEXTS:-4k,128k,512k,1m}" \
    --method "${LONG_METHODS:-full,gsa,hgsa}" --steps 20 --json >$RES/decode-long.json
  echo "plain: exit $?"; cat $RES/decode-long.json
  # The same cells under LONG_AB_ENV, by default without the step's CUDA graphs and the few-row GEMV kernel (every
  # op launched on its own, products through cuBLASLt): what they buy.
  if [ -n "${LONG_AB_CONTEXTS-4k,128k,512k}" ]; then
    env ${LONG_AB_ENV:-GSA_CUDA_GRAPHS=0 GSA_CUDA_GEMV=0} timeout 200 "$GSA" bench decode --device cuda \
      --preset llama1b --context "${LONG_AB_CONTEXTS-4k,128k,512k}" --method "${LONG_METHODS:-full,gsa,hgsa}" \
      --steps 20 --json >$RES/decode-long-ab.json
    echo "under ${LONG_AB_ENV:-GSA_CUDA_GRAPHS=0 GSA_CUDA_GEMV=0}: exit $?"; cat $RES/decode-long-ab.json
  fi
fi

if has decode-offload; then
  section "raw KV pages off the GPU (--gpu-kv-budget): latency against all on the GPU, and a 2M-token context (llama1b)"
  # The same cells without and with the budget (one process each): gsa / hgsa at the default budget L/16, full,
  # and hgsa with a fixed k per level; then hgsa at 2M tokens, 64 GiB of raw K/V in pinned host memory and the
  # gists and the window on the GPU, beside its 4k latency under the same budget (OFFLOAD_PROFILE=1: also the
  # 2M cell's phases). OFFLOAD_CHUNKS sets the preset's hierarchy (--chunks; default 16,4), OFFLOAD_SWEEP=0 skips
  # the with / without sweep.
  CH=${OFFLOAD_CHUNKS:+--chunks $OFFLOAD_CHUNKS}
  if [ "${OFFLOAD_SWEEP:-1}" = 1 ]; then
    for kvb in "" "${OFFLOAD_BUDGET:-8GiB}"; do
      for sel in "--method ${OFFLOAD_METHODS:-gsa,hgsa,full}" "--method hgsa --topk ${OFFLOAD_TOPK:-4}"; do
        timeout 200 "$GSA" bench decode --device cuda --preset llama1b --context "${OFFLOAD_CONTEXTS:-4k,128k,512k}" \
          $sel $CH --steps 20 ${kvb:+--gpu-kv-budget $kvb} --json >$RES/offload.json
        echo "budget '${kvb:-none}', $sel $CH: exit $? $(cat $RES/offload.json)"
        cat $RES/offload.json >>$RES/decode-offload.jsonl
      done
    done
  fi
  free -g | head -2
  t0=$SECONDS
  timeout "${OFFLOAD_2M_TIMEOUT:-300}" "$GSA" bench decode --device cuda --preset llama1b $CH \
    --context "${OFFLOAD_LONG:-4k,2m}" --method hgsa --topk "${OFFLOAD_TOPK:-4}" --steps 20 \
    --gpu-kv-budget "${OFFLOAD_BUDGET:-8GiB}" --json >$RES/decode-offload-2m.json 2>$RES/decode-offload-2m.err
  echo "2M: exit $? after $((SECONDS - t0)) s: $(cat $RES/decode-offload-2m.json)"; tail -3 $RES/decode-offload-2m.err
  if [ "${OFFLOAD_PROFILE:-0}" = 1 ]; then
    GSA_DECODE_PROFILE=1 timeout 200 "$GSA" bench decode --device cuda --preset llama1b $CH --context 2m \
      --method hgsa --topk "${OFFLOAD_TOPK:-4}" --steps 4 --gpu-kv-budget "${OFFLOAD_BUDGET:-8GiB}" --json \
      >$RES/decode-offload-2m-profile.json 2>$RES/decode-offload-2m-profile.err
    echo "2M profiled: exit $?"; grep -E "decode-profile" $RES/decode-offload-2m-profile.err | tail -3
  fi
fi

if has hf-decode; then
  section "whole-model decode, Llama-3.2-1B shape: transformers (SDPA, static cache) and gsa bench decode --preset llama1b (scripts/bench-hf-decode.py)"
  # gsa's batch-16 cells beyond 32k are left out: each session's random K/V is built on the host (minutes).
  rm -f $RES/hf-decode.jsonl
  timeout "${HF_DECODE_TIMEOUT:-420}" python3 scripts/bench-hf-decode.py --contexts "${HF_CONTEXTS:-4k,32k,128k}" \
    --batches "${HF_BATCHES:-1,16}" --gsa "$GSA" --gsa-max-tokens "${HF_GSA_MAX_TOKENS:-600000}" --gsa-timeout 150 \
    --out $RES/hf-decode.jsonl
  echo "bench-hf-decode.py exit code: $?"
fi

if has prefill; then
  section "prefill tokens/s, Llama-3.2-1B shape, batch 1: transformers (SDPA) and gsa bench decode --preset llama1b --prefill"
  rm -f $RES/prefill.jsonl
  # PREFILL_DENSE=0 skips the transformers comparison, the profile and the long gist-mask prefill (unfolding only).
  if [ "${PREFILL_DENSE:-1}" != 0 ]; then
  timeout "${PREFILL_TIMEOUT:-240}" python3 scripts/bench-hf-decode.py --prefill --contexts "${PREFILL_CONTEXTS:-32k,128k}" \
    --steps 3 --gsa "$GSA" --gsa-methods "${PREFILL_METHODS:-full,gsa,hgsa}" --gsa-timeout 120 --out $RES/prefill.jsonl
  echo "bench-hf-decode.py --prefill exit code: $?"
  # Where a prefill's time goes (the device synchronised around each phase: slower than the plain run above).
  GSA_TRAIN_PROFILE=1 timeout 120 "$GSA" bench decode --device cuda --preset llama1b --prefill --steps 1 \
    --context "${PREFILL_PROFILE_CONTEXT:-32k}" --method "${PREFILL_METHODS:-full,gsa,hgsa}"
  # Contexts past what one forward pass holds (about 700k rows of this shape): the gist-mask prefill in passes
  # of --prefill-pass rows over the earlier passes' keys; the GPU memory column is what the method holds.
  timeout "${PREFILL_LONG_TIMEOUT:-200}" "$GSA" bench decode --device cuda --preset llama1b --prefill --steps 2 \
    --context "${PREFILL_LONG_CONTEXTS:-512k,1m}" --method "${PREFILL_LONG_METHODS:-gsa,hgsa}"
  echo "long prefill exit code: $?"
  fi
  # The unfolding prefill (an unfold-trained model's auto mode): every row selects its own chunks (the presets
  # select per row, train_select token) and unfolds them, in passes past 65536 rows; then where its time goes at
  # 32k (GSA_TRAIN_PROFILE=1; PREFILL_UNFOLD_PROFILE_CONTEXTS). PREFILL_UNFOLD_CONTEXTS="" skips both.
  if [ -n "${PREFILL_UNFOLD_CONTEXTS-32k,128k,1m}" ]; then
    # PREFILL_UNFOLD_CHUNKS (e.g. 16: one level, flat selection) replaces the preset's {16, 4} in both runs.
    UCH=${PREFILL_UNFOLD_CHUNKS:+--chunks $PREFILL_UNFOLD_CHUNKS}
    UMETH=gsa,hgsa; [ -n "${PREFILL_UNFOLD_CHUNKS:-}" ] && [[ $PREFILL_UNFOLD_CHUNKS != *,* ]] && UMETH=gsa
    timeout "${PREFILL_UNFOLD_TIMEOUT:-200}" "$GSA" bench decode --device cuda --preset llama1b --prefill --steps 2 \
      --prefill-mode unfold --context "${PREFILL_UNFOLD_CONTEXTS-32k,128k,1m}" --method $UMETH $UCH
    echo "unfolding prefill exit code: $?"
    GSA_TRAIN_PROFILE=1 timeout "${PREFILL_UNFOLD_PROFILE_TIMEOUT:-60}" "$GSA" bench decode --device cuda \
      --preset llama1b --prefill --steps 1 --prefill-mode unfold --context "${PREFILL_UNFOLD_PROFILE_CONTEXTS:-32k}" \
      --method $UMETH $UCH
  fi
fi

if has multigpu; then
  section "several GPUs: data parallel over NCCL, ZeRO-1, scaling (scripts/device-multigpu.sh; needs 2 GPUs)"
  timeout "${MULTIGPU_TIMEOUT:-420}" scripts/device-multigpu.sh "$GSA" "$RES"
  echo "device-multigpu.sh exit code: $?"
fi

if has serve; then
  section "serving from the GPU: gsa bench serve --device cuda against --device cpu (a gpu20m GSA model, docs/serve.md)"
  # The model: the gpu256-gsa8 recipe for SERVE_STEPS steps (its weights barely matter for throughput), with the
  # tokenizer beside it. The CPU row uses this machine's cores (OMP_NUM_THREADS=SERVE_CPU_THREADS); SERVE_DEVICES picks rows.
  sm=/tmp/gsa-serve-model
  rm -rf $sm && timeout 150 "$GSA" train --config configs/gpu256-gsa8.json --steps "${SERVE_STEPS:-100}" \
    --eval-every 0 --save-every 0 --out $sm >$RES/serve-train.log 2>&1
  echo "train: exit $? $(tail -1 $RES/serve-train.log)"
  cp bundle-data/tok/* $sm/final/ 2>/dev/null
  for dev in ${SERVE_DEVICES:-cuda cpu}; do
    for mix in "--clients 32 --requests 8" "--clients 8 --requests 4 --long-prompt 3000"; do
      tag=$dev-$(echo "$mix" | tr -d ' -' | cut -c1-24)
      OMP_NUM_THREADS=${SERVE_CPU_THREADS:-16} timeout 150 "$GSA" bench serve --model $sm/final --device $dev \
        $mix --alone 8 --check >$RES/serve-$tag.txt 2>&1
      echo "--- $dev $mix: exit $?"; cat $RES/serve-$tag.txt
    done
  done
fi

if has pipeline; then
  section "the paper's pipeline: full pretraining -> compress/unfold CPT, Full-CPT, GSA from scratch (scripts/gpu-pipeline.sh)"
  # Three branches side by side on one GPU, then gsa eval --device cuda on the 4k-stage models (docs/results.md).
  # A warm machine keeps /tmp between calls: an earlier call's cells must not join this call's summary (runs/,
  # the trainings, is kept on purpose: a finished run is reused).
  rm -rf "$RES/pipeline"
  TIME_LIMIT="${PIPELINE_TIMEOUT:-540}" timeout "${PIPELINE_TIMEOUT:-540}" scripts/gpu-pipeline.sh "$GSA" $RES/pipeline
  echo "gpu-pipeline.sh exit code: $?"
fi

if has first-result; then
  section "first GPU result: the passkey curriculum at GPU scale (scripts/gpu-results.sh)"
  timeout "${RESULTS_TIMEOUT:-560}" scripts/gpu-results.sh "$GSA" $RES/runs
fi

tar -C $RES -czf "$OUT/results.tar.gz" . && echo "results: $(ls $RES | tr '\n' ' ')"
