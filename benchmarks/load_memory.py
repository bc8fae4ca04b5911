"""Peak resident memory when loading a UIO2 checkpoint (goal: below 1.5x the weights' size).

Writes a random-weight checkpoint of a preset (default: large, bfloat16) to a temporary directory,
then loads it with `load_model` in a fresh subprocess and reads that process's peak RSS
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`) right after loading and again after every weight has
been read once (so mmap-backed tensors are resident too). The checkpoint is deleted afterwards.

    python benchmarks/load_memory.py [--preset large] [--dtype bfloat16] [--format safetensors bin]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
from uio_robot.policies.uio2.checkpoint import load_model
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
base = peak_mb()
start = time.perf_counter()
model = load_model(sys.argv[1], dtype=sys.argv[2], device="cpu")
seconds = time.perf_counter() - start
after_load = peak_mb()
with torch.no_grad():
    checksum = sum(float(p.float().sum()) for p in model.parameters())
after_touch = peak_mb()
weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
print(json.dumps(dict(base_mb=base, after_load_mb=after_load, after_touch_mb=after_touch,
                      weights_mb=weights, load_s=seconds, finite=checksum == checksum)))
"""


def write_random_checkpoint(directory: Path, preset_name: str, dtype_name: str, fmt: str) -> None:
    import torch
    from safetensors.torch import save_file
    from tqdm import tqdm

    from uio_robot.policies.uio2.checkpoint import BIN_FILE, CONFIG_FILE, SAFETENSORS_FILE, pick_dtype
    from uio_robot.policies.uio2.config import preset
    from uio_robot.policies.uio2.model import UIO2Model

    config = preset(preset_name)
    dtype = pick_dtype(dtype_name)
    with torch.device("meta"):
        model = UIO2Model(config)
    gen = torch.Generator().manual_seed(0)
    state = {name: (torch.randn(p.shape, generator=gen) * 0.02).to(dtype)
             for name, p in tqdm(model.state_dict().items(), desc="random weights", leave=False,
                                  disable=not sys.stderr.isatty())}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config.to_dict()))
    if fmt == "safetensors":
        save_file(state, str(directory / SAFETENSORS_FILE))
    else:
        torch.save(state, directory / BIN_FILE)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="large")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--format", nargs="+", default=["safetensors", "bin"], choices=["safetensors", "bin"])
    p.add_argument("--workdir", type=Path, default=None, help="where to write the temporary checkpoint")
    args = p.parse_args()
    print(f"{'format':<12} {'weights MB':>10} {'baseline MB':>11} {'peak load MB':>12} "
          f"{'peak touched MB':>15} {'ratio':>6} {'load s':>7}")
    for fmt in args.format:
        tmp = Path(tempfile.mkdtemp(prefix="uio2-load-mem-", dir=args.workdir))
        try:
            # Written in a child process so the writer's memory does not count against the loader.
            subprocess.run([sys.executable, __file__, "--write", str(tmp), args.preset, args.dtype, fmt],
                           check=True)
            time.sleep(1.0)
            out = subprocess.run([sys.executable, "-c", CHILD, str(tmp), args.dtype], check=True,
                                 capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            ratio = r["after_touch_mb"] / r["weights_mb"]
            print(f"{fmt:<12} {r['weights_mb']:>10.0f} {r['base_mb']:>11.0f} {r['after_load_mb']:>12.0f} "
                  f"{r['after_touch_mb']:>15.0f} {ratio:>6.2f} {r['load_s']:>7.1f}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print("ratio = peak RSS of the loading process (imports included) / weights' size; goal < 1.5")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--write":
        write_random_checkpoint(Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
        sys.exit(0)
    sys.exit(main())
