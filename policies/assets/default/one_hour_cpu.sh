#!/usr/bin/env bash
# Train the small UIO2 policy from scratch in about an hour on a 2-core CPU: record at 128 px, then a
# four-stage curriculum (grounding in float32, the mixed stages under bfloat16 autocast), then evaluate.
#
#   bash policies/assets/default/one_hour_cpu.sh [DATA_DIR] [RUNS_DIR] [record|train|eval|all]
#
# Timings and results (AMD EPYC, 2 cores, AVX-512 BF16) are in README.md beside this file, "One hour on
# the CPU". On a CPU without bf16 support set PRECISION=fp32 (the mixed stages about 1.5x slower). The
# shipped model came from the longer reproduce.sh. Stages 1-2 run in float32: under bf16 stage 1 grounded
# about 200 steps later (README). Measured after this version's run (README, "The other branch"): a 64 px
# anneal in place of stage 4 did better on both targets. A fourth attempt (README) dropped the 128 px stage and
# recorded every demo with recovery noise: ReachOne rose to 85%, Reach stayed near 50% and VQA fell to 68%.
# Since this run, stage 1 trains a 512-piece tokenizer on the data and the suite's vocabulary (the measured run:
# 400 pieces, stage 1's texts only); a run with it (README, "A third attempt") grounded worse, within the
# seed-to-seed spread of stage 1, which is wide: see README before comparing one run with another.
set -euo pipefail
DATA=${1:-data/hour}; RUNS=${2:-runs/hour}; WHAT=${3:-all}
PRECISION=${PRECISION:-bf16}
ONE=$DATA/one; REST=$DATA/rest
export MUJOCO_GL=${MUJOCO_GL:-egl}

if [[ $WHAT == record || $WHAT == all ]]; then
  # one-object scenes for grounding ("one"), the rest of the mix ("rest"); two recorders side by side
  uio-robot record --out "$REST" --tasks Reach --episodes 3000 --seed 0 &
  demos=$!
  uio-robot record --out "$ONE" --tasks ReachOne --episodes 2000 --vqa-scenes 1000 --vqa-tasks ReachOne
  uio-robot record --out "$ONE" --tasks Reach --episodes 0 --seed 50000 --vqa-scenes 2000 --vqa-tasks Reach \
    --vqa-max-objects 1
  uio-robot record --out "$REST" --tasks Reach --episodes 0 --seed 4000 --vqa-scenes 3000 --vqa-tasks Reach
  uio-robot record --out "$REST" --tasks Reach --episodes 0 --seed 0 --vqa-scenes 400 \
    --vqa-tasks Push,PickPlace,Stack,PickByDescription
  wait "$demos"  # (recorders may share a directory: each rereads index.json under a lock)
fi

CPU=(data.chunk=6 train.threads=2 train.workers=0 train.log_every=50 train.save_every=500)
if [[ $WHAT == train || $WHAT == all ]]; then
  # 1. "where is the X?" on one-object scenes, 64 px (the images are shrunk), constant lr after warm-up
  uio-robot train "${CPU[@]}" data.dir="$ONE" "data.tasks=[ReachOne]" "data.vqa_kinds=[where]" data.vqa_fraction=0.95 \
    model.image_size=64 train.batch_size=64 train.lr=5e-4 train.min_lr_ratio=1 train.warmup=50 train.steps=800 \
    train.eval_every=400 train.seed=1 out_dir="$RUNS/s1"
  ALL=(data.dir="$ONE" "data.more_dirs=[$REST]" "data.tasks=[ReachOne,Reach]")
  # 2. "where" on scenes of 1-5 objects
  uio-robot train "${CPU[@]}" "${ALL[@]}" "data.vqa_kinds=[where]" data.vqa_fraction=0.9 model.init="$RUNS/s1/checkpoint" \
    train.batch_size=64 train.lr=5e-4 train.min_lr_ratio=1 train.warmup=50 train.steps=700 train.eval_every=350 \
    out_dir="$RUNS/s2"
  # 3. actions and every VQA kind, half and half, still 64 px, lr 5e-4 -> 0
  uio-robot train "${CPU[@]}" "${ALL[@]}" data.vqa_fraction=0.5 model.init="$RUNS/s2/checkpoint" \
    train.precision="$PRECISION" train.batch_size=64 train.lr=5e-4 train.min_lr_ratio=0 train.warmup=50 \
    train.steps=3000 train.eval_every=750 out_dir="$RUNS/s3"
  # 4. 128 px (the camera's size; the ViT position grid resized), shape and colour questions weighted
  uio-robot train "${CPU[@]}" "${ALL[@]}" data.vqa_fraction=0.45 data.kind_repeat.where=2 data.kind_repeat.shape=3 \
    data.kind_repeat.colour=4 model.init="$RUNS/s3/checkpoint" model.init_image_size=128 train.precision="$PRECISION" \
    train.batch_size=64 train.lr=3e-4 train.min_lr_ratio=0 train.warmup=20 train.steps=1200 train.eval_every=400 \
    out_dir="$RUNS/s4"
fi

if [[ $WHAT == eval || $WHAT == all ]]; then
  uio-robot eval "eval.tasks=[uio_robot/Reach-v0,uio_robot/ReachOne-v0]" eval.episodes=100 eval.vqa_scenes=40 \
    policy.checkpoint="$RUNS/s4/checkpoint" out_dir="$RUNS/eval"
fi
