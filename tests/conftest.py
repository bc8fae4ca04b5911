"""Shared test set-up: headless rendering and where the shared reference data lives."""

import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

REPO = Path(__file__).resolve().parents[1]


def _shared_candidates() -> list[Path]:
    """Where the reference data may be: $UIO_ROBOT_SHARED, `shared/` beside this checkout, or beside the
    local repository this checkout was cloned from (a scratch clone made with `git clone . /tmp/x`)."""
    found = [Path(os.environ["UIO_ROBOT_SHARED"])] if os.environ.get("UIO_ROBOT_SHARED") else []
    found.append(REPO.parent / "shared")
    try:
        origin = subprocess.run(["git", "-C", str(REPO), "remote", "get-url", "origin"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        origin = ""
    if origin and Path(origin).is_dir():
        found.append(Path(origin).resolve().parent / "shared")
    return found


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    candidates = _shared_candidates()
    for path in candidates:
        if path.is_dir():
            return path
    pytest.fail(f"shared reference data not found at any of {[str(p) for p in candidates]} "
                f"(set UIO_ROBOT_SHARED to its folder)")


@pytest.fixture
def one_torch_thread():
    """Small models' ops are tiny; one torch thread avoids OpenMP spinning when the CPU is shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
