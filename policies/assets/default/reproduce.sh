#!/usr/bin/env bash
# Reproduce the shipped default model: record the data, then train in stages (a curriculum).
#
#   bash policies/assets/default/reproduce.sh [DATA_DIR] [RUNS_DIR]
#
# Recording takes ~15 minutes on 2 CPU cores. Stages 1-4 ran on one H200 (about 11 minutes, with
# three other runs sharing the card); on a 2-core CPU they would take hours. Stage 5, a short anneal
# at 64 px, ran on the 2-core CPU in 15 minutes; stage 6, the fine-tune at 128 px, in about 70 minutes;
# stage 7, on data recorded at 128 px, in 72 + 38 minutes (7, 7b); stage 8 in 31 (bf16), stage 9 (recovery demos) in 23. Set DEVICE=cpu or cuda (default auto) and WORKERS
# (data-loader processes; 0 on a small CPU). Stage boundaries were set by time on the GPU; the step
# counts below are where each stage ended. Stage 1 trains a new tokenizer: since 2026-11-28 512 pieces on
# the data plus the suite's vocabulary (envs/vocabulary.py); the shipped one has 400 pieces, from the
# project's first checkpoint, so a rerun's token ids differ from the shipped model's.
set -euo pipefail
DATA=${1:-data/default}; RUNS=${2:-runs/default}
DEVICE=${DEVICE:-auto}; WORKERS=${WORKERS:-6}
ONE=$DATA/one; FULL=$DATA/full

# 1-object grounding data: ReachOne demos (2000) + 1000 ReachOne scenes, and 2000 one-object Reach scenes
# stages 1-6 used recordings at 64 px (stage 6 trained at 128 px on them, upsampled)
R64=(--image-size 64)
for d in "$ONE" "$FULL"; do
  uio-robot record --out "$d" "${R64[@]}" --tasks ReachOne --episodes 2000 --vqa-scenes 1000 --vqa-tasks ReachOne
  uio-robot record --out "$d" "${R64[@]}" --tasks Reach --episodes 0 --seed 50000 --vqa-scenes 2000 \
    --vqa-tasks Reach --vqa-max-objects 1
done
# the full mix adds 2000 Reach demos (3 objects) and 400 scenes of every task
uio-robot record --out "$FULL" "${R64[@]}" --tasks Reach --episodes 2000 --seed 0
uio-robot record --out "$FULL" "${R64[@]}" --tasks Reach --episodes 0 --seed 2500 --vqa-scenes 400 --vqa-tasks Reach
uio-robot record --out "$FULL" "${R64[@]}" --tasks Reach --episodes 0 --seed 0 --vqa-scenes 400 \
  --vqa-tasks Push,PickPlace,Stack,PickByDescription
# stage 7's data, at 128 px (the camera's size; about 8 minutes on 2 cores): the same demos, 1500 Reach
# scenes of 3 objects, 1000 one-object Reach scenes, 1000 ReachOne scenes, 400 of each other task
FULL128=$DATA/full128
uio-robot record --out "$FULL128" --tasks Reach --episodes 2000 --seed 0
uio-robot record --out "$FULL128" --tasks Reach --episodes 0 --seed 2500 --vqa-scenes 1500 --vqa-tasks Reach
uio-robot record --out "$FULL128" --tasks Reach --episodes 0 --seed 50000 --vqa-scenes 1000 --vqa-tasks Reach \
  --vqa-max-objects 1
uio-robot record --out "$FULL128" --tasks ReachOne --episodes 2000 --vqa-scenes 1000 --vqa-tasks ReachOne
uio-robot record --out "$FULL128" --tasks Reach --episodes 0 --seed 0 --vqa-scenes 400 \
  --vqa-tasks Push,PickPlace,Stack,PickByDescription

COMMON=(model.image_size=64 data.chunk=6 train.batch_size=64 train.lr=5e-4 train.min_lr_ratio=1
        train.device="$DEVICE" train.workers="$WORKERS" train.threads=0 train.log_every=50 train.eval_every=500
        train.save_every=500)
WHERE_ONE=(data.dir="$ONE" "data.tasks=[ReachOne]" "data.vqa_kinds=[where]" data.vqa_fraction=0.95)
WHERE_ALL=(data.dir="$FULL" "data.tasks=[ReachOne,Reach]" "data.vqa_kinds=[where]" data.vqa_fraction=0.9)
MIX=(data.dir="$FULL" "data.tasks=[ReachOne,Reach]" data.vqa_fraction=0.5)

# 1. where is the object, one object per scene; 2. the same on scenes of up to five objects;
# 3.-4. actions (ReachOne and Reach) and every VQA kind, half and half
uio-robot train "${COMMON[@]}" "${WHERE_ONE[@]}" train.steps=900 train.warmup=50 train.seed=1 out_dir="$RUNS/s1"
uio-robot train "${COMMON[@]}" "${WHERE_ALL[@]}" train.steps=700 train.warmup=50 model.init="$RUNS/s1/checkpoint" \
  out_dir="$RUNS/s2"
uio-robot train "${COMMON[@]}" "${MIX[@]}" train.steps=1150 train.warmup=50 model.init="$RUNS/s2/checkpoint" \
  out_dir="$RUNS/s3"
uio-robot train "${COMMON[@]}" "${MIX[@]}" train.steps=4750 train.warmup=20 model.init="$RUNS/s3/checkpoint" \
  out_dir="$RUNS/s4"
# 5. anneal: lr 2e-4 down to 0 (cosine), batch 32 (this one ran on the 2-core CPU, 2 threads)
uio-robot train "${MIX[@]}" model.image_size=64 data.chunk=6 model.init="$RUNS/s4/checkpoint" train.batch_size=32 \
  train.lr=2e-4 train.min_lr_ratio=0 train.warmup=20 train.steps=1500 train.threads=2 train.eval_every=250 \
  out_dir="$RUNS/s5"
# 6. at 128 px, the camera's own size (the ViT's position grid resized), on the 2-core CPU, batch 32, 2 threads.
# 6a ran with a 3600-step cosine schedule and was stopped after step 800 (lr still 2.8e-4); 6b weights the
# shape and colour questions; 6c is a short anneal with more action examples.
SHAPES=(data.kind_repeat.where=2 data.kind_repeat.shape=3 data.kind_repeat.colour=4)
CPU=(data.chunk=6 train.batch_size=32 train.min_lr_ratio=0 train.threads=2 train.eval_every=400)
uio-robot train "${MIX[@]}" "${CPU[@]}" model.init="$RUNS/s5/checkpoint" model.init_image_size=128 train.lr=3e-4 \
  train.warmup=50 train.steps=800 out_dir="$RUNS/s6a"
uio-robot train "${MIX[@]}" "${SHAPES[@]}" "${CPU[@]}" model.init="$RUNS/s6a/checkpoint" train.lr=3e-4 \
  train.warmup=20 train.steps=2800 out_dir="$RUNS/s6b"
uio-robot train "${MIX[@]}" "${SHAPES[@]}" "${CPU[@]}" data.vqa_fraction=0.35 model.init="$RUNS/s6b/checkpoint" \
  train.lr=1.5e-4 train.warmup=20 train.steps=1800 out_dir="$RUNS/s6c"
# 7. on the 128 px recordings, the mix weighted as in 6b, lr 2e-4 -> 0 (2-core CPU, 2 threads, ~50 minutes)
uio-robot train data.dir="$FULL128" "data.tasks=[ReachOne,Reach]" data.vqa_fraction=0.5 "${SHAPES[@]}" "${CPU[@]}" \
  model.init="$RUNS/s6c/checkpoint" train.lr=2e-4 train.warmup=20 train.steps=4200 train.eval_every=500 out_dir="$RUNS/s7"
# 7b. more 128 px data (2000 Reach demos, 3000 Reach scenes; 3 minutes to record), 45% VQA, lr 1.5e-4 -> 0
uio-robot record --out "$FULL128" --tasks Reach --episodes 2000 --seed 10000
uio-robot record --out "$FULL128" --tasks Reach --episodes 0 --seed 4000 --vqa-scenes 3000 --vqa-tasks Reach
uio-robot train data.dir="$FULL128" "data.tasks=[ReachOne,Reach]" data.vqa_fraction=0.45 "${SHAPES[@]}" "${CPU[@]}" \
  model.init="$RUNS/s7/checkpoint" train.lr=1.5e-4 train.warmup=20 train.steps=3000 train.eval_every=500 \
  out_dir="$RUNS/s7b"
# 8. 3000 more Reach demos and 2000 Reach scenes (two recorders writing one directory, 2.7 minutes), read with
# full128 through data.more_dirs; lr 1e-4 -> 0 under bf16 autocast (31 minutes on the 2-core CPU)
EXTRA=$DATA/extra128
uio-robot record --out "$EXTRA" --tasks Reach --episodes 1500 --seed 12000 &
first=$!
uio-robot record --out "$EXTRA" --tasks Reach --episodes 1500 --seed 13500
uio-robot record --out "$EXTRA" --tasks Reach --episodes 0 --seed 7000 --vqa-scenes 2000 --vqa-tasks Reach
wait "$first"
uio-robot train data.dir="$FULL128" "data.more_dirs=[$EXTRA]" "data.tasks=[ReachOne,Reach]" data.vqa_fraction=0.45 \
  "${SHAPES[@]}" "${CPU[@]}" train.precision=bf16 model.init="$RUNS/s7b/checkpoint" train.lr=1e-4 train.warmup=20 \
  train.steps=3600 train.eval_every=600 out_dir="$RUNS/s8"
# 9. recovery demos: `record --action-noise 0.01` executes each expert step with 1 cm of noise per axis and
# records the expert's own step from the state reached. 3000 Reach (seeds 12000-14999, the same scenes as
# EXTRA's clean demos) and 2000 ReachOne (seeds 2000-3999), about 5 minutes with two recorders; trained with
# one_hour_cpu.sh's 128 px recordings and EXTRA, lr 1e-4 -> 0 under bf16 (23 minutes on the 2-core CPU)
HOUR=$DATA/hour; NOISY=$DATA/noisy
bash "$(dirname "$0")/one_hour_cpu.sh" "$HOUR" "$RUNS/hour" record
uio-robot record --out "$NOISY" --tasks Reach --episodes 1500 --seed 12000 --action-noise 0.01 &
first=$!
uio-robot record --out "$NOISY" --tasks Reach --episodes 1500 --seed 13500 --action-noise 0.01
uio-robot record --out "$NOISY" --tasks ReachOne --episodes 2000 --seed 2000 --action-noise 0.01
wait "$first"
uio-robot train data.dir="$HOUR/one" "data.more_dirs=[$HOUR/rest,$EXTRA,$NOISY]" "data.tasks=[ReachOne,Reach]" \
  data.vqa_fraction=0.45 "${SHAPES[@]}" "${CPU[@]}" train.precision=bf16 model.init="$RUNS/s8/checkpoint" train.lr=1e-4 \
  train.warmup=20 train.steps=2400 train.eval_every=600 out_dir="$RUNS/s9"
echo "the model: $RUNS/s9/checkpoint"
