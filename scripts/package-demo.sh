#!/usr/bin/env bash
# Copies the demo models out of the curriculum runs (scripts/results.sh) into models/demo: the GSA 8x model with
# per-token selection from the first stage (stage 9: tok256, tok1k, tok2k) and 800 steps more at 2k with the
# routing loss (stage 10: route2k), and the full-attention model of stages 1-4, each stage's recipe, training log
# and loss plot. models/demo/demo.json (the demo's ratio) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
D=models/demo
declare -A stages=([gsa]="tok256 tok1k tok2k route2k" [full]="short5 curric1k curric2k curric2kb")
declare -A suffix=([gsa]=gsa8 [full]=full)
for m in gsa full; do
  run=${suffix[$m]}
  last=${stages[$m]##* }
  rm -rf "${D:?}/$m" "$D/recipe-$m" "$D/log-$m"
  cp -r runs/$last-$run/final $D/$m
  mkdir -p $D/recipe-$m $D/log-$m
  stage=1
  for s in ${stages[$m]}; do
    cp configs/experiments/$s-$run.json $D/recipe-$m/$stage-$s.json
    cp runs/$s-$run/log.jsonl $D/log-$m/$stage-$s.jsonl
    cp runs/$s-$run/loss.svg $D/log-$m/$stage-$s.svg
    stage=$((stage + 1))
  done
done
rm -f $D/recipe-gsa.json $D/recipe-full.json $D/train-log-gsa.jsonl $D/train-log-full.jsonl $D/loss-gsa.svg $D/loss-full.svg
du -sh $D
