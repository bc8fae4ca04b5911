#!/usr/bin/env bash
# The checks the next GPU session owes (benchmarks/RESULTS.md, "Open on a GPU"), in one call of ~6 minutes:
# 1. where a UIO2-L decode step's ~5 ms goes (profile_decode.py: graphs on/off, profiler table, trace);
# 2. the shipped model in the real loop at 20 Hz on the GPU, 10 held-out Reach seeds each:
#    a) same-tick inference (loop.act_wait_s=0.04): expected to match lock-step eval (23-25/30 on CPU, paced);
#    b) no wait (stale chunks, as on the CPU at 20 Hz: 2-4/10).
# Usage: OUT=/some/dir bash benchmarks/gpu_next.sh     (MUJOCO_GL=egl must render on that machine)
set -u
OUT="${OUT:-gpu_next}"
PY="${PY:-python}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
mkdir -p "$OUT"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; } > "$OUT/environment.txt"
timeout --kill-after=10 150 "$PY" benchmarks/profile_decode.py --preset large --device cuda \
  --out "$OUT/profile_large" > "$OUT/profile_large.log" 2>&1 || echo "profile_decode failed (rc $?)" >> "$OUT/environment.txt"
for mode in wait nowait; do
  extra=(loop.act_wait_s=0.04)
  [ "$mode" = nowait ] && extra=(loop.act_wait_s=0)
  for seed in $(seq 100000 100009); do
    timeout --kill-after=5 40 "$PY" -m uio_robot.agent.cli rollout env.seed="$seed" env.pace=real policy.device=cuda \
      loop.rate_hz=20 loop.replan_every=4 "${extra[@]}" out_dir="$OUT/rollout_$mode" \
      >> "$OUT/rollout_$mode.log" 2>&1 || echo "rollout $mode $seed failed (rc $?)" >> "$OUT/environment.txt"
  done
done
"$PY" - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import json, pathlib, sys
for mode in ("wait", "nowait"):
    runs = [json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1], f"rollout_{mode}").glob("*.json"))]
    ok = sum(r["success"] for r in runs)
    lat = [r["telemetry"]["latency_ms"]["p50"] for r in runs if r["telemetry"]["latency_ms"]["p50"]]
    print(f"{mode}: {ok}/{len(runs)} success, request p50 {sorted(lat)[len(lat) // 2] if lat else '-'} ms")
PY
date -u >> "$OUT/environment.txt"
