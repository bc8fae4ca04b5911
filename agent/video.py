"""Write camera frames as an mp4 (H.264 through imageio-ffmpeg), atomically.

The video is encoded to a temporary file in the target directory and renamed into place, so a crash
never leaves a truncated mp4 under the final name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".mp4", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)
    try:
        # macro_block_size=1: keep odd sizes as they are instead of rescaling them.
        with imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=8,
                                macro_block_size=1, pixelformat="yuv420p" if shape[0] % 2 == shape[1] % 2 == 0
                                else "yuv444p") as writer:
            for frame in frames:
                writer.append_data(frame)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
