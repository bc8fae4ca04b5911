"""Interleaved CPU A/B of `uio-robot bench` configurations (tiny, batch 1): plain/fast x float32/bfloat16.

Why interleaved in one process: the development machine is a shared 2-core VM; running the four
configurations round-robin exposes each to the same background load. Usage:
    python benchmarks/cpu_ab.py THREADS OUT_DIR [ROUNDS]
"""

import sys
from pathlib import Path

import torch

from uio_robot.policies.uio2.bench import run, write_json

STAGES = ("preprocess", "vision", "encoder", "decode_token", "action_step", "answer32", "after_step")


def main() -> None:
    threads, out = int(sys.argv[1]), Path(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    torch.set_num_threads(threads)
    configs = [("plain", True, torch.float32), ("fast", False, torch.float32),
               ("fast", False, torch.bfloat16), ("plain", True, torch.bfloat16)]
    for rnd in range(rounds):
        for name, plain, dtype in configs:
            r = run("tiny", 1, plain, torch.device("cpu"), dtype, iters=4, warmup=1, vocab_size=1536)
            key = f"{name}_{str(dtype).replace('torch.', '')}"
            write_json(r, out / f"t{threads}_{key}_{rnd}.json")
            print(key, rnd, {s: round(r[f"{s}_ms"]["p50"], 1) for s in STAGES}, flush=True)


if __name__ == "__main__":
    main()
