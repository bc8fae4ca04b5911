"""Regenerate the sample images under envs/samples/: for each task, the front and wrist views side by
side, at reset and after the expert's first steps.

    MUJOCO_GL=egl python -m uio_robot.envs.samples [--size 224] [--seed 0] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from uio_robot.common.atomic import atomic_write_bytes

from .experts import make_expert
from .tabletop_env import TabletopEnv
from .tasks import TASKS

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write a uint8 HxWx3 image as PNG, atomically (temp file in the same folder, then rename)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"write_png: expected HxWx3, got {rgb.shape}")
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[r].tobytes() for r in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    atomic_write_bytes(path, png)


def task_sample(task: str, size: int = 224, seed: int = 0, expert_steps: int = 12) -> np.ndarray:
    """Front | wrist view at reset (top row) and after `expert_steps` expert steps (bottom row)."""
    env = TabletopEnv(task, image_size=size)
    try:
        obs, _ = env.reset(seed=seed)
        top = np.concatenate([obs["image"], obs["wrist_image"]], axis=1)
        expert = make_expert(env)
        for _ in range(expert_steps):
            obs, *_ = env.step(expert.act(obs))
        bottom = np.concatenate([obs["image"], obs["wrist_image"]], axis=1)
    finally:
        env.close()
    return np.concatenate([top, bottom], axis=0)


def write_samples(out_dir: str | os.PathLike = SAMPLES_DIR, size: int = 224, seed: int = 0) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for task in TASKS:
        path = out / f"{task}.png"
        write_png(path, task_sample(task, size, seed))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(SAMPLES_DIR))
    args = parser.parse_args(argv)
    for path in write_samples(args.out, args.size, args.seed):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
