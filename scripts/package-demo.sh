#!/usr/bin/env bash
# Copies the demo models out of the curriculum runs (scripts/results.sh, stage 6) into models/demo: the last 2k
# stage's GSA 8x model and its full-attention twin, each stage's recipe, training log and loss plot.
set -euo pipefail
cd "$(dirname "$0")/.."
D=models/demo
for m in gsa full; do
  run=$m
  [ $m = gsa ] && run=gsa8
  rm -rf "${D:?}/$m" "$D/recipe-$m" "$D/log-$m"
  cp -r runs/curric2kb-$run/final $D/$m
  mkdir -p $D/recipe-$m $D/log-$m
  stage=1
  for s in short5 curric1k curric2k curric2kb; do
    cp configs/$s-$run.json $D/recipe-$m/$stage-$s.json
    log=runs/$s-$run/log.jsonl
    if [ $s = short5 ] && [ $m = gsa ]; then
      # The 1k stage starts from this run's step-8000 checkpoint: the log stops there.
      python3 -c 'import json,sys
for l in open(sys.argv[1]):
    if json.loads(l)["step"] <= 8000: sys.stdout.write(l)' "$log" > $D/log-$m/$stage-$s.jsonl
    else
      cp "$log" $D/log-$m/$stage-$s.jsonl
    fi
    cp runs/$s-$run/loss.svg $D/log-$m/$stage-$s.svg
    stage=$((stage + 1))
  done
done
rm -f $D/recipe-gsa.json $D/recipe-full.json $D/train-log-gsa.jsonl $D/train-log-full.jsonl $D/loss-gsa.svg $D/loss-full.svg
du -sh $D
