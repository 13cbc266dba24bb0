#!/usr/bin/env bash
# Every generated task of the needle suite can be drawn for training: `gsa data tasks` builds samples through
# make_task_sample, the function the training mix calls, so each task must give N samples of about the asked
# length with the answer after answer_begin, over a haystack written here (no ../shared/data needed). qa is not
# in the list: it needs a QA file that the training options cannot name (docs/data.md).
#   tests/cli/task-suite.sh GSA      (from the repository root; exit 77: python3 missing, skipped)
set -euo pipefail
G=$1
command -v python3 >/dev/null || { echo "python3 missing: skipped"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/h"
for i in $(seq 1 400); do
  echo "Sentence $i of the filler says that the river number $((i * 7 % 13)) runs past hill $((i % 17)) today."
done >"$tmp/h/filler.txt"
for t in passkey niah_single niah_multikey niah_multivalue niah_multiquery variable_tracking kv_retrieval; do
  "$G" data tasks --tokenizer models/demo/gsa --task $t --length 1000 --n 4 --seed 5 --haystack "$tmp/h" \
    --out "$tmp/$t.jsonl" >/dev/null
  python3 - "$tmp/$t.jsonl" $t <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 4, f"{sys.argv[2]}: {len(rows)} samples, not 4"
for r in rows:
    n, ab = len(r["ids"]), r["answer_begin"]
    # about the asked length; the answer (at least one token) and the separator follow answer_begin
    assert 850 <= n <= 1100 and 0 < ab <= n - 2, f"{sys.argv[2]}: {n} ids, answer_begin {ab}"
print(f"{sys.argv[2]}: {len(rows)} samples of {min(len(r['ids']) for r in rows)}-{max(len(r['ids']) for r in rows)} ids")
PY
done
