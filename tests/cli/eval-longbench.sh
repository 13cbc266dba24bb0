#!/usr/bin/env bash
# cli.eval_longbench: `gsa eval --jsonl` (LongBench's pred.py protocol, tools/cmd-eval.cpp) end to end on the demo
# model: a file of two datasets runs, writes pred.py's prediction files, and `gsa score` on each file gives the
# score the eval printed (the two score through the same eval.py rules). It replaced the test of the older
# LongBench path of src/infer/eval-runner, which nothing ran any more.
#   tests/cli/eval-longbench.sh GSA_BINARY      (run from the repository root)
set -uo pipefail
gsa=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "cli.eval_longbench: $*"; exit 1; }
ctx="The river runs past the old mill. The mill was built by Ann Smith in the spring. The town grew around it."
for i in 1 2; do
  echo "{\"input\": \"Who built the mill?\", \"context\": \"Passage $i:\\n$ctx\", \"answers\": [\"Ann Smith\"], \"length\": 20, \"dataset\": \"hotpotqa\", \"all_classes\": null, \"_id\": \"h$i\"}"
done >"$tmp/lb.jsonl"
echo "{\"input\": \"How many passages?\", \"context\": \"Paragraph 1: a\\n\\nParagraph 2: b\", \"answers\": [\"2\"], \"length\": 9, \"dataset\": \"passage_count\", \"all_classes\": null, \"_id\": \"c1\"}" >>"$tmp/lb.jsonl"
out=$(OMP_NUM_THREADS=1 "$gsa" eval --model models/demo/gsa --jsonl "$tmp/lb.jsonl" --lengths 128 --methods full \
  --samples 0 --pred-dir "$tmp/pred" 2>&1) || fail "gsa eval --jsonl failed: $out"
echo "$out"
for d in hotpotqa passage_count; do
  f="$tmp/pred/full-128/$d.jsonl"
  [ -f "$f" ] || fail "no prediction file $f"
  want=$([ $d = hotpotqa ] && echo 2 || echo 1)
  [ "$(wc -l <"$f")" -eq "$want" ] || fail "$f has $(wc -l <"$f") lines, not $want"
  printed=$(grep -E "^\| $d \| full \| 128 \| [0-9.]+ \|$" <<<"$out" | awk -F'|' '{gsub(/ /, "", $5); print $5}')
  [ -n "$printed" ] || fail "the eval printed no eval.py score for $d"
  scored=$("$gsa" score --pred "$f" 2>&1) || fail "gsa score $f failed: $scored"
  grep -q "^$d ([a-z_0-9]*): $printed over $want predictions" <<<"$scored" ||
    fail "gsa score says '$scored' where the eval printed $printed"
  echo "ok: $d $printed"
done
