#!/usr/bin/env bash
# One-shot GPU measurement for benchmarks/RESULTS.md: every preset, fast and plain path, batch 1 and 8,
# bf16, one JSON per run in $OUT (default ./gpu_results), plus nvidia-smi / versions and a log.
# Sized for ~8 minutes on one H100: each run has its own time bound (PER_RUN_S); a run that overruns is
# killed and recorded as missing, and the script goes on. The plain path is slow (the reference port's
# ~500 ms action step at L size), so it gets fewer iterations; plain XL and plain batch 8 of XL / XXL
# are left out to stay within the bound.
# Usage: OUT=/some/dir bash benchmarks/gpu_bench.sh    (ONLY="tiny_fast_b1 large_fast_b1" runs just those)
set -u
OUT="${OUT:-gpu_results}"
PY="${PY:-python}"
mkdir -p "$OUT"
LOG="$OUT/gpu_bench.log"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
} > "$OUT/environment.txt" 2>&1

run() {  # run NAME SECONDS ARGS...
  local name="$1" limit="$2"
  shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  local start=$SECONDS
  if timeout --kill-after=10 "$limit" "$PY" -m uio_robot.agent.cli bench --device cuda "$@" \
      --json "$OUT/$name.json" >> "$LOG" 2>&1; then
    echo "ok      $name ($((SECONDS - start)) s)" | tee -a "$LOG"
  else
    echo "FAILED  $name (rc $?, $((SECONDS - start)) s; see $LOG)" | tee -a "$LOG"
  fi
}

# Time bounds (seconds) add up to 480 s at worst; most runs end well before their bound.
# fast path first (the figures the targets are about), small to large
run tiny_fast_b1 25 --preset tiny --batch 1 --iters 30 --warmup 3
run tiny_fast_b8 25 --preset tiny --batch 8 --iters 15 --warmup 2
run large_fast_b1 45 --preset large --batch 1 --iters 30 --warmup 3
run large_fast_b8 40 --preset large --batch 8 --iters 15 --warmup 2
run xl_fast_b1 45 --preset xl --batch 1 --iters 20 --warmup 2
run xl_fast_b8 40 --preset xl --batch 8 --iters 10 --warmup 2
run xxl_fast_b1 55 --preset xxl --batch 1 --iters 20 --warmup 2
run xxl_fast_b8 45 --preset xxl --batch 8 --iters 8 --warmup 2
# plain path: few iterations (an action step is hundreds of ms at L size); batch 8 only for tiny and L
run tiny_plain_b1 15 --preset tiny --plain --batch 1 --iters 10 --warmup 2
run tiny_plain_b8 15 --preset tiny --plain --batch 8 --iters 4 --warmup 1
run large_plain_b1 45 --preset large --plain --batch 1 --iters 5 --warmup 1
run large_plain_b8 30 --preset large --plain --batch 8 --iters 2 --warmup 1
run xxl_plain_b1 55 --preset xxl --plain --batch 1 --iters 2 --warmup 1
date -u >> "$OUT/environment.txt"
