"""Write camera frames as an mp4 (H.264 through imageio-ffmpeg), atomically.

The video is encoded to a temporary file in the target directory and renamed into place, so a crash
never leaves a truncated mp4 under the final name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from uio_robot.common.atomic import atomic_path


def write_mp4(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: float) -> Path:
    """Encode uint8 HxWx3 frames (all the same size) at `fps` to `path`."""
    import imageio.v2 as imageio

    if not frames:
        raise ValueError(f"write_mp4: no frames for {path}")
    shape = frames[0].shape
    for i, frame in enumerate(frames):
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape != shape or shape[2] != 3:
            raise ValueError(f"write_mp4: frame {i} is {frame.dtype} {frame.shape}, expected uint8 {shape} RGB")
    path = Path(path)
    # macro_block_size=1: keep odd sizes as they are instead of rescaling them.
    with atomic_path(path, suffix=".mp4") as tmp, imageio.get_writer(
            str(tmp), format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=8, macro_block_size=1,
            pixelformat="yuv420p" if shape[0] % 2 == shape[1] % 2 == 0 else "yuv444p") as writer:
        for frame in frames:
            writer.append_data(frame)
    return path
