"""Build a `Policy` from its configuration (`policy.kind`, `policy.checkpoint`, device, dtype).

One place that knows every kind, so `rollout`, `eval` and the ROS node build policies the same way:
- `uio2`: a UIO2 checkpoint directory; "" = the shipped default model. Its action/state layout is checked
  against the robot's here, so a mismatch fails at start.
- `zero`, `random`: baselines inside the robot's action bounds.
- `replay`: plays back recorded actions; `checkpoint` is a `.npy` file [T, A], an `.npz` with an
  `actions` (or `action_sent`) array, or an episode directory holding such a `data.npz`.

Takes plain values (not the runtime's config class) because policies never import the runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from uio_robot.policies.simple import RandomPolicy, ReplayPolicy, ZeroPolicy
from uio_robot.policies.types import ArraySpec, Policy

KINDS = ("uio2", "zero", "random", "replay")


class DefaultModelMissing(FileNotFoundError):
    """The shipped default model is not in this installation."""


def default_checkpoint_dir() -> Path:
    """The shipped default model's directory; a clear error when this build does not contain it."""
    try:
        from uio_robot.policies.assets import default_checkpoint
    except ImportError:
        default_checkpoint = None
    path = default_checkpoint() if default_checkpoint is not None else None
    if path is None or not (Path(path) / "config.json").is_file():
        raise DefaultModelMissing(
            "the shipped default model (policies/assets/default/) is not in this installation; train one "
            "with `uio-robot train` and pass policy.checkpoint=DIR, or use policy.kind=zero|random")
    return Path(path)


def resolve_checkpoint(checkpoint: str) -> Path:
    """`checkpoint` as a directory path, the default model for ""."""
    return default_checkpoint_dir() if not checkpoint else Path(checkpoint).expanduser()


def load_replay_actions(path: str | Path) -> np.ndarray:
    """Recorded actions [T, A] from a .npy, a .npz, or an episode directory with data.npz."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "data.npz"
    if not path.is_file():
        raise FileNotFoundError(f"replay: no recorded actions at {path}")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    with np.load(path, allow_pickle=False) as npz:
        for key in ("actions", "action_sent"):
            if key in npz.files:
                return npz[key]
        raise ValueError(f"replay: {path} has no 'actions' or 'action_sent' array (it has {npz.files})")


def build_policy(kind: str, action_spec: ArraySpec, state_spec: ArraySpec, *, checkpoint: str = "",
                 device: str = "auto", dtype: str = "auto", period: float = 0.05, horizon: int = 4,
                 seed: int = 0, threads: int = 0, fast: bool | None = None,
                 model_period: float | None = None) -> Policy:
    """A ready policy for a robot with these specs; `period`/`horizon` apply to the simple kinds.

    A UIO2 policy keeps the chunk length it was trained with, and its control period unless `model_period`
    sets how far apart its rows are due (a simulator run slower than real time); `fast` picks its decode
    path (None: the static-cache path on a GPU only). `threads` > 0 sets
    torch's CPU thread count (process-wide): a small model on a busy CPU runs several times faster on
    one thread than on threads that wait for each other.
    """
    if kind == "uio2":
        import torch

        from uio_robot.policies.uio2_policy import UIO2Policy

        if threads:
            torch.set_num_threads(threads)

        policy = UIO2Policy(resolve_checkpoint(checkpoint), device=device, dtype=dtype, fast=fast,
                            period=model_period)
        policy.check_spec(action_spec, state_spec)
        return policy
    if kind == "zero":
        return ZeroPolicy(action_spec, horizon, period)
    if kind == "random":
        return RandomPolicy(action_spec, horizon, period, seed=seed)
    if kind == "replay":
        if not checkpoint:
            raise ValueError("replay: set policy.checkpoint to the recorded actions (.npy/.npz/episode dir)")
        actions = load_replay_actions(checkpoint)
        if actions.ndim != 2 or actions.shape[1] != action_spec.dim:
            raise ValueError(f"replay: recorded actions of shape {actions.shape} do not fit the robot's "
                             f"{action_spec.dim} action dims")
        return ReplayPolicy(actions, horizon, period)
    raise ValueError(f"unknown policy kind {kind!r}; choose one of {KINDS}")
