#!/usr/bin/env bash
# The fourth one-hour CPU attempt (2026-11-28, session 11), as run: results beside it and in
# policies/assets/default/README.md, "One hour on the CPU". Not the shipped one_hour_cpu.sh.
set -euo pipefail
DATA=${1:-data/hour}; RUNS=${2:-runs/hour}; WHAT=${3:-all}
ONE=$DATA/one; REST=$DATA/rest
export MUJOCO_GL=${MUJOCO_GL:-egl}
t0=$(date +%s); lap() { echo "[one_hour] $1 at $(( ($(date +%s) - t0) / 60 )) min $(( ($(date +%s) - t0) % 60 )) s"; }

if [[ $WHAT == record || $WHAT == all ]]; then
  ( uio-robot record --out "$REST" --tasks Reach --episodes 6000 --seed 0 --action-noise 0.01
    uio-robot record --out "$REST" --tasks Reach --episodes 0 --seed 0 --vqa-scenes 400 \
      --vqa-tasks Push,PickPlace,Stack,PickByDescription ) &
  demos=$!
  uio-robot record --out "$ONE" --tasks ReachOne --episodes 2000 --vqa-scenes 1000 --vqa-tasks ReachOne \
    --action-noise 0.01
  uio-robot record --out "$ONE" --tasks Reach --episodes 0 --seed 50000 --vqa-scenes 2000 --vqa-tasks Reach \
    --vqa-max-objects 1
  uio-robot record --out "$REST" --tasks Reach --episodes 0 --seed 6000 --vqa-scenes 5000 --vqa-tasks Reach
  wait "$demos"
  lap recorded
fi

CPU=(data.chunk=6 train.threads=2 train.workers=0 train.log_every=50 train.save_every=500)
ALL=(data.dir="$ONE" "data.more_dirs=[$REST]" "data.tasks=[ReachOne,Reach]")
if [[ $WHAT == train || $WHAT == all ]]; then
  uio-robot train "${CPU[@]}" data.dir="$ONE" "data.tasks=[ReachOne]" "data.vqa_kinds=[where]" data.vqa_fraction=0.95 \
    model.image_size=64 train.batch_size=64 train.lr=5e-4 train.min_lr_ratio=1 train.warmup=50 train.steps=1600 \
    train.log_every=50 train.eval_every=100 train.stop_where_bins=12 train.seed=1 out_dir="$RUNS/s1"
  lap "stage 1"
  uio-robot train "${CPU[@]}" "${ALL[@]}" "data.vqa_kinds=[where]" data.vqa_fraction=0.9 model.init="$RUNS/s1/checkpoint" \
    train.batch_size=64 train.lr=5e-4 train.min_lr_ratio=1 train.warmup=50 train.steps=800 train.eval_every=100 \
    train.stop_where_bins=20 out_dir="$RUNS/s2"
  lap "stage 2"
  uio-robot train "${CPU[@]}" "${ALL[@]}" data.vqa_fraction=0.5 data.kind_repeat.where=3 data.kind_repeat.shape=2 \
    data.kind_repeat.colour=2 model.init="$RUNS/s2/checkpoint" train.precision=bf16 train.batch_size=64 train.lr=5e-4 \
    train.min_lr_ratio=0 train.warmup=50 train.steps=3600 train.eval_every=900 out_dir="$RUNS/s3"
  lap "stage 3"
fi

if [[ $WHAT == eval || $WHAT == all ]]; then
  uio-robot eval "eval.tasks=[uio_robot/Reach-v0,uio_robot/ReachOne-v0]" eval.episodes=100 eval.vqa_scenes=40 \
    policy.checkpoint="$RUNS/s3/checkpoint" out_dir="$RUNS/eval"
  lap evaluated
fi
