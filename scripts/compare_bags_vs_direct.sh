#!/usr/bin/env bash
# MT10 success of a `sim` model trained from ROS-recorded bags vs one trained from directly collected
# demonstrations: the same N demonstrations per task (same seeds), the same training, the same evaluation.
# About 60 minutes on 2 CPU cores at N=10. Usage: scripts/compare_bags_vs_direct.sh [N] [OUT]   (from the repo root,
# after `make venv-test`). Results: OUT/eval_direct.json, OUT/eval_bags.json (and their Markdown reports).
set -euo pipefail
N=${1:-10}
OUT=${2:-runs/bags_vs_direct}
B=.venv/bin/dream-vla-ros
export AMENT_PREFIX_PATH=$PWD/.venv MUJOCO_GL=${MUJOCO_GL:-egl} LP_NUM_THREADS=1
mkdir -p "$OUT"
$B collect --out "$OUT/data_direct" --episodes-per-task "$N" --workers 2 --image-size 96 --no-progress --overwrite
$B record expert --out "$OUT/bags" --episodes-per-task "$N" --image-size 96 --no-progress --json > "$OUT/record.json"
$B dataset build "$OUT/bags" --out "$OUT/data_bags" --rate 80 --overwrite --json > "$OUT/build.json"
for source in direct bags; do
  $B train --dataset "$OUT/data_$source" --out "$OUT/model_$source" --preset sim --steps $((400 * N)) \
    --lr 8e-4 --threads 2 --checkpoint-every 500 --no-progress
done
for source in direct bags; do  # one after the other: closed loop in real time needs the CPU to itself
  $B eval --model "$OUT/model_$source" --tasks mt10 --episodes "$N" --json --out "$OUT/eval_$source" \
    > "$OUT/eval_$source.json"
done
python3 -c "import json,sys; [print(s, json.load(open(f'$OUT/eval_{s}.json'))['mean_success']) for s in ('direct','bags')]"
