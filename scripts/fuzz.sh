#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ (clang, ASan + UBSan, own tree build-fuzz) and runs each for a bounded
# time. Any crash, sanitizer report, uncaught non-gsa exception, hang (-timeout) or runaway allocation
# (-rss_limit_mb / -malloc_limit_mb) fails the script; the input that did it is left in build-fuzz/artifacts/.
# docs/testing.md says how to reproduce one and turn it into a regression test.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 12 s each, every target)
#
# Seeds are made at run time from the files we ship (models/demo, tests/data, ../shared/data when present) and
# from small files the gsa binary writes (a token dataset, a trained tokenizer, a checkpoint); nothing is
# committed. The gsa binary is $GSA_BIN, else build/gsa (scripts/test.sh builds it first), else it is built here.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-12}
shift || true
all=(fuzz-safetensors fuzz-hf-config fuzz-tokenizer fuzz-shard fuzz-longbench fuzz-trainer-state fuzz-qa-tasks
     fuzz-score fuzz-serve-request)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
B=${GSA_FUZZ_BUILD:-build-fuzz}  # another tree: GSA_FUZZ_BUILD=build-fuzz2
CXX=$(command -v clang++)  # Debian 12: clang 14
CC=$(command -v clang)
t0=$(date +%s)
# Same compiler and flags as scripts/sanitize.sh (build type ASan, CMakeLists.txt's sanitizer block): with ccache
# the libraries compiled there are reused here. -g would otherwise put the build folder into ccache's hash.
export CCACHE_NOHASHDIR=1
cmake -S . -B $B -DCMAKE_BUILD_TYPE=ASan -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_C_COMPILER="$CC" -DGSA_FUZZ=ON \
  -DGSA_TESTS=OFF -DGSA_BENCH=OFF >/dev/null
cmake --build $B -j"$(nproc)" --target "${targets[@]}"
t1=$(date +%s)

# --- seeds ---
seeds=$B/seeds
rm -rf "$seeds"
for t in "${all[@]}"; do mkdir -p "$seeds/$t"; done
mkdir -p $B/work
gsa=${GSA_BIN:-build/gsa}
if [ ! -x "$gsa" ]; then
  cmake --build $B -j"$(nproc)" --target gsa
  gsa=$B/gsa
fi
export ASAN_OPTIONS=detect_leaks=0  # for the seed-making gsa when it is the instrumented one
n=0
seed() { cp "$1" "$seeds/$2/$n-$(basename "$1")"; n=$((n + 1)); }
small() { [ "$(stat -c %s "$1")" -le "$2" ]; }  # larger files would be cut at -max_len anyway
for f in models/demo/*/config.json tests/data/golden/*/config.json; do seed "$f" fuzz-hf-config; done
for f in tests/data/golden/*/golden.safetensors; do seed "$f" fuzz-safetensors; done
for f in models/demo/*/tokenizer.json tests/data/tokenizer/*/tokenizer.json ../shared/data/tokenizers/*/tokenizer.json; do
  [ -f "$f" ] && small "$f" 65536 && seed "$f" fuzz-tokenizer
done
w=$B/work
rm -rf $w/*
"$gsa" tokenizer train --vocab 300 --input README.md --out $w/tok >/dev/null
seed $w/tok/tokenizer.json fuzz-tokenizer
"$gsa" data prepare --tokenizer models/demo/gsa --input README.md docs/results.md --out $w/data --val-fraction 0.2 \
  --block-tokens 256 >/dev/null
for f in $w/data/*.bin; do seed "$f" fuzz-shard; done
"$gsa" forward --model models/demo/gsa --ids 1,2,3 --dump $w/dump.safetensors >/dev/null
seed $w/dump.safetensors fuzz-safetensors
"$gsa" train --preset tiny --data $w/data --out $w/run --steps 2 --seq-len 32 --save-every 1 --log-every 1 \
  >/dev/null 2>&1 && for f in $w/run/checkpoint-*/trainer.json; do seed "$f" fuzz-trainer-state; done
# LongBench records: the first lines of any LongBench files in ../shared/data, and one record per metric family.
for f in $(find ../shared/data -name '*.jsonl' 2>/dev/null | head -20); do
  head -c 16384 "$f" | head -2 >"$seeds/fuzz-longbench/$n.jsonl"; n=$((n + 1))
done
cat >"$seeds/fuzz-longbench/lb-qa.jsonl" <<'J'
{"input": "Which city hosts the Łazienki Park?", "context": "Passage 1:\nŁazienki Park is in Warsaw.", "answers": ["Warsaw"], "length": 7, "dataset": "hotpotqa", "language": "en", "all_classes": null, "_id": "a1"}
J
cat >"$seeds/fuzz-longbench/lb-trec.jsonl" <<'J'
{"input": "What is the capital of France?", "context": "Question: Who wrote Hamlet?\nType: Individual\n", "answers": ["Location"], "length": 9, "dataset": "trec", "language": "en", "all_classes": ["Individual", "Location", "Other location"], "_id": "t1"}
J
cat >"$seeds/fuzz-longbench/lb-count.jsonl" <<'J'
{"input": "", "context": "Paragraph 1: a\n\nParagraph 2: b\n\nParagraph 3: a", "answers": ["2"], "length": 9, "dataset": "passage_count", "language": "en", "all_classes": null, "_id": "c1"}
J
cat >"$seeds/fuzz-longbench/lb-retrieval.jsonl" <<'J'
{"input": "an abstract", "context": "Paragraph 1: x\nParagraph 2: y", "answers": ["Paragraph 2"], "length": 4, "dataset": "passage_retrieval_en", "language": "en", "all_classes": null, "_id": "r1"}
J
# QA task files (the record forms tasks-qa.cpp accepts) and haystack text (a few KB of our own prose).
cat >"$seeds/fuzz-qa-tasks/qa.jsonl" <<'J'
{"question": "Where is the Łazienki Park?", "answers": ["Warsaw"], "context": "Łazienki Park is in Warsaw."}
{"input": "Who wrote it?", "answer": "Ann", "passages": [{"title": "A", "text": "Ann wrote it.", "is_supporting": true}, "A distractor.", {"paragraph_text": "Another one."}]}
{"question": "What colour is the sky?", "answers": ["blue", "azure"], "passages": ["The sky is blue.", {"content": "Grass is green."}]}
J
head -c 3000 docs/testing.md >"$seeds/fuzz-qa-tasks/haystack.txt"
# Prediction files of gsa score (eval.py's format), one per metric family.
cat >"$seeds/fuzz-score/pred.jsonl" <<'J'
{"pred": "Warsaw, Poland", "answers": ["Warsaw"], "all_classes": null, "length": 3100}
{"pred": "Paragraph 3\nmore", "answers": ["Paragraph 3"], "all_classes": ["Location", "Individual"], "length": 5000}
{"pred": "There are 2 paragraphs.", "answers": ["2"], "all_classes": null, "length": 9000}
J
cat >"$seeds/fuzz-score/code.jsonl" <<'J'
{"pred": "    return a + b\n}", "answers": ["return a+b;"], "all_classes": ["Location", "Other location"], "length": 12}
J
# Request bodies of gsa serve: completions (text and token ids) and chat, with the fields the server reads.
cat >"$seeds/fuzz-serve-request/completion.json" <<'J'
{"model": "gsa", "prompt": "Once upon a time", "max_tokens": 32, "temperature": 0, "top_p": 0.9, "seed": 7, "stop": ["\n", "The"], "stream": true, "stream_options": {"include_usage": true}, "gsa": {"stats": true, "reuse": false}}
J
cat >"$seeds/fuzz-serve-request/ids.json" <<'J'
{"model": "gsa", "prompt": [[1, 2, 3]], "max_tokens": 4, "n": 1, "echo": false, "logprobs": null, "suffix": ""}
J
cat >"$seeds/fuzz-serve-request/chat.json" <<'J'
{"model": "gsa", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi Łódź"}]}, {"role": "assistant", "content": null}, {"role": "user", "content": "Again?"}], "max_completion_tokens": 8, "response_format": {"type": "text"}, "tools": []}
J
for f in $seeds/*; do [ -n "$(ls -A "$f")" ] || echo "fuzz.sh: no seeds for $(basename "$f") (it starts from nothing)"; done
t2=$(date +%s)

# --- runs ---
declare -A max_len=([fuzz-safetensors]=131072 [fuzz-hf-config]=8192 [fuzz-tokenizer]=65536 [fuzz-shard]=65536
                    [fuzz-longbench]=16384 [fuzz-trainer-state]=4096 [fuzz-qa-tasks]=16384 [fuzz-score]=16384
                    [fuzz-serve-request]=16384)
mkdir -p $B/artifacts $B/corpus
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0:abort_on_error=1:symbolize=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
failed=()
for t in "${targets[@]}"; do
  mkdir -p $B/corpus/$t
  echo "== $t: ${secs} s"
  dict=(-dict=fuzz/json.dict)
  [ $t = fuzz-shard ] && dict=()  # binary
  if ! $B/fuzz/$t -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
      -max_len="${max_len[$t]}" "${dict[@]}" -print_final_stats=1 -artifact_prefix=$B/artifacts/$t- \
      $B/corpus/$t "$seeds/$t" >$B/$t.log 2>&1; then
    failed+=("$t")
    tail -60 $B/$t.log
    echo "== $t FAILED: reproduce with $B/fuzz/$t $B/artifacts/$t-*   (full log: $B/$t.log)"
  else
    grep -E "stat::number_of_executed_units|cov:" $B/$t.log | tail -2 | tr '\n' ' '
    echo
  fi
done
t3=$(date +%s)
echo "fuzz.sh: build $((t1 - t0)) s, seeds $((t2 - t1)) s, fuzzing $((t3 - t2)) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz.sh: every target ran clean"
