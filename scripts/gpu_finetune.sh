#!/usr/bin/env bash
# Fine-tune a `sim` model on a GPU machine with fresh demonstrations: one `collect` per task (more processes
# for the harder tasks, disjoint seed ranges) until a deadline, merge, then two CUDA fine-tunes in a row
# (a cosine schedule at 3e-4, then one at 1e-4). This is how stages 5-6 of the shipped model were made on an
# H100 with 16 cores (models/metaworld_mt10/MODEL_CARD.md). Needs MuJoCo rendering (MUJOCO_GL=egl on an NVIDIA
# driver) and torch with CUDA (DEVICE=cpu runs it without, slowly).
# Usage: scripts/gpu_finetune.sh [INIT] [OUT] [COLLECT_S] [MINUTES_1] [MINUTES_2]   (from the repo root)
set -euo pipefail
INIT=${1:-models/metaworld_mt10}
OUT=${2:-runs/gpu_finetune}
COLLECT_S=${3:-220}
MINUTES_1=${4:-6.9}
MINUTES_2=${5:-3.6}
SEED=${SEED:-4000}
B=${DREAM_VLA_ROS:-dream-vla-ros}
export MUJOCO_GL=${MUJOCO_GL:-egl} LP_NUM_THREADS=1
mkdir -p "$OUT/data"

collect() {  # NAME TASK SEED: SIGINT at the deadline finalises the dataset with the episodes kept so far
  timeout -s INT "$COLLECT_S" $B collect --out "$OUT/data/$1" --tasks "$2" --episodes-per-task 700 --seed "$3" \
    --workers 1 --image-size 96 --camera corner,topview --no-progress --overwrite > "$OUT/data/$1.log" 2>&1 || true
}
for task in door-open drawer-open drawer-close button-press-topdown window-open window-close; do
  collect "$task" "$task" "$SEED" &
done
for task in reach push pick-place; do
  collect "$task-a" "$task" "$SEED" &
  collect "$task-b" "$task" $((SEED + 8000)) &
done
for i in 0 1 2 3; do collect "peg-$i" peg-insert-side $((SEED + 8000 * i)) & done
wait
$B dataset merge $(ls -d "$OUT"/data/*/) --out "$OUT/merged" --overwrite

finetune() {  # INIT OUT LR MINUTES WARMUP
  $B train --dataset "$OUT/merged" --init "$1" --out "$2" --preset sim --steps 100000 --minutes "$4" \
    --batch-size 256 --lr "$3" --warmup-steps "$5" --device "${DEVICE:-cuda}" --eval-every 250 --checkpoint-every 250 \
    --threads 8 --no-progress
}
finetune "$INIT" "$OUT/stage1" 3e-4 "$MINUTES_1" 100
finetune "$OUT/stage1" "$OUT/stage2" 1e-4 "$MINUTES_2" 50
echo "model: $OUT/stage2 (evaluate with: dream-vla-ros eval --model $OUT/stage2 --tasks mt10 --episodes 20)"
