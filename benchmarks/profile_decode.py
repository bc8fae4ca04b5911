"""Where a decode step's time goes: the fast path's per-token time with CUDA graphs on and off, and a
torch.profiler table and Chrome trace of one 32-token decode.

    python benchmarks/profile_decode.py --preset large --device cuda --out prof_large
    python benchmarks/profile_decode.py --preset tiny --device cpu            # a quick check anywhere

Why: on an H200 a UIO2-L decode step took 5.4 ms and an XXL one 6.9 ms, nearly flat in model size, so
most of it is not weight traffic (benchmarks/RESULTS.md). The table says whether the host (launches,
syncs, Python) or the device (which kernels) holds it. Random weights, batch 1, the `uio-robot bench`
scene (384 px camera image, 2 history frames, 40-token prompt).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from uio_robot.policies.uio2.bench import ANSWER_TOKENS, HISTORY, Fast, Scene, random_model
from uio_robot.policies.uio2.checkpoint import pick_device
from uio_robot.policies.uio2.fast import FastGenerator


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def per_token_ms(pipe: Fast, state, device: torch.device, repeats: int) -> float:
    """(time of a full decode - time of a 1-token decode) / the extra tokens, median over `repeats`."""
    def timed(steps: int) -> float:
        _sync(device)
        start = time.perf_counter()
        pipe.decode(state, steps, None)
        _sync(device)
        return time.perf_counter() - start

    samples = sorted((timed(ANSWER_TOKENS) - timed(1)) / (ANSWER_TOKENS - 1) for _ in range(repeats))
    return samples[len(samples) // 2] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="large", choices=["tiny", "large", "xl", "xxl"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, default=25, help="rows of the profiler table")
    parser.add_argument("--out", default="profile_decode", help="folder for the trace and the JSON")
    args = parser.parse_args()
    device = pick_device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(
        args.dtype, torch.bfloat16 if device.type == "cuda" else torch.float32)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = random_model(args.preset, device, dtype)
    scene = Scene(model, 1)
    result = {"preset": args.preset, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
              "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__}
    graph_modes = (True, False) if device.type == "cuda" else (False,)
    with torch.no_grad():
        for graphs in graph_modes:
            gen = FastGenerator(model, max_batch=1, max_new_tokens=ANSWER_TOKENS, use_cuda_graphs=graphs)
            pipe = Fast(model, scene, gen, prefetch=True)
            state = pipe.encoder(pipe.vision(pipe.preprocess(HISTORY + 1)))
            pipe.decode(state, ANSWER_TOKENS, None)  # warm-up (graph capture, allocations)
            key = "token_ms_graphs" if graphs else "token_ms_eager"
            result[key] = round(per_token_ms(pipe, state, device, args.repeats), 3)
            print(f"{key}: {result[key]}", flush=True)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities, record_shapes=True) as prof:
            pipe.decode(state, ANSWER_TOKENS, None)  # the last mode's generator (eager: every op visible)
            _sync(device)
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=args.rows)
    print(table)
    (out / "table.txt").write_text(table)
    prof.export_chrome_trace(str(out / "trace.json"))
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out}/table.txt, trace.json, result.json")


if __name__ == "__main__":
    main()
