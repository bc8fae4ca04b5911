"""Shared test set-up: headless rendering and where the shared reference data lives."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"shared reference data not found at {SHARED}")
    return SHARED


@pytest.fixture
def one_torch_thread():
    """Small models' ops are tiny; one torch thread avoids OpenMP spinning when the CPU is shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
