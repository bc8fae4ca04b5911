"""Action and state codec: robot units <-> normalized values <-> UIO2 location bins.

Why this exists as one piece: wrong or mismatched normalization statistics are the most common silent
failure of learned robot policies. The statistics, the vector layout (names) and a hash of both travel
inside the checkpoint, and `check_layout` turns any mismatch with the robot into an error at start.

Conventions:
- normalized space is [-1, 1]: `quantile` mode maps q01 -> -1 and q99 -> +1, `minmax` maps min/max;
  dimensions whose `normalize` flag is False (e.g. a binary gripper already in [-1, 1]) pass through;
  everything is clamped to [-1, 1].
- a normalized value x is written as the UIO2 location value v = (x + 1) / 2 in [0, 1], bin int(v * 999)
  (1000 bins, as UIO2 writes coordinates); a bin decodes to its centre, so a round trip is within half a bin.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

NUM_BINS = 1000
_EPS = 1e-8


class CodecMismatch(ValueError):
    """The checkpoint's action/state layout or statistics do not fit the robot or environment."""


def value_to_bin(v: np.ndarray) -> np.ndarray:
    """[0, 1] -> bin index in [0, 999] (UIO2: int(v * 999)); out-of-range values are clamped."""
    v = np.clip(np.asarray(v, dtype=np.float64), 0.0, 1.0)
    return np.minimum((v * (NUM_BINS - 1)).astype(np.int64), NUM_BINS - 1)


def bin_to_value(b: np.ndarray) -> np.ndarray:
    """Bin index -> the centre of its interval in [0, 1]."""
    b = np.clip(np.asarray(b, dtype=np.int64), 0, NUM_BINS - 1)
    return np.minimum((b + 0.5) / (NUM_BINS - 1), 1.0)


@dataclass
class VectorStats:
    """Per-dimension statistics and layout of one vector (actions or state)."""

    names: list[str]
    q01: list[float]
    q99: list[float]
    min: list[float]
    max: list[float]
    mean: list[float]
    std: list[float]
    normalize: list[bool] = field(default_factory=list)  # False = pass through (already in [-1, 1])
    mode: str = "quantile"  # quantile | minmax

    def __post_init__(self) -> None:
        n = len(self.names)
        if not self.normalize:
            self.normalize = [True] * n
        for key in ("q01", "q99", "min", "max", "mean", "std", "normalize"):
            if len(getattr(self, key)) != n:
                raise CodecMismatch(f"stats: {key} has {len(getattr(self, key))} values for {n} names")
        if self.mode not in ("quantile", "minmax"):
            raise CodecMismatch(f"stats: unknown mode {self.mode!r} (quantile | minmax)")

    @classmethod
    def from_data(cls, data: np.ndarray, names: list[str], normalize: list[bool] | None = None,
                  mode: str = "quantile") -> VectorStats:
        data = np.asarray(data, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != len(names):
            raise CodecMismatch(f"stats: data of shape {data.shape} does not match {len(names)} names")
        if not np.all(np.isfinite(data)):
            raise CodecMismatch("stats: data contains NaN or inf")
        q01, q99 = np.quantile(data, 0.01, axis=0), np.quantile(data, 0.99, axis=0)
        return cls(list(names), q01.tolist(), q99.tolist(), data.min(0).tolist(), data.max(0).tolist(),
                   data.mean(0).tolist(), data.std(0).tolist(), list(normalize or [True] * len(names)), mode)

    def _range(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = (self.q01, self.q99) if self.mode == "quantile" else (self.min, self.max)
        return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)

    def normalize_values(self, x: np.ndarray) -> np.ndarray:
        lo, hi = self._range()
        x = np.asarray(x, dtype=np.float64)
        scaled = 2.0 * (x - lo) / np.maximum(hi - lo, _EPS) - 1.0
        return np.clip(np.where(self.normalize, scaled, x), -1.0, 1.0)

    def unnormalize_values(self, y: np.ndarray) -> np.ndarray:
        lo, hi = self._range()
        y = np.clip(np.asarray(y, dtype=np.float64), -1.0, 1.0)
        return np.where(self.normalize, (y + 1.0) / 2.0 * (hi - lo) + lo, y)

    def to_bins(self, x: np.ndarray) -> np.ndarray:
        """Robot units [..., D] -> bins [..., D]."""
        return value_to_bin((self.normalize_values(x) + 1.0) / 2.0)

    def from_bins(self, b: np.ndarray) -> np.ndarray:
        """Bins [..., D] -> robot units [..., D] (float32)."""
        return self.unnormalize_values(bin_to_value(b) * 2.0 - 1.0).astype(np.float32)

    def half_bin(self) -> np.ndarray:
        """Largest round-trip error per dimension, in robot units (for in-range values)."""
        lo, hi = self._range()
        span = np.where(self.normalize, hi - lo, 2.0)
        return span * 0.5 / (NUM_BINS - 1)


@dataclass
class Codec:
    """Statistics of actions and state, with the chunk length the model was trained to emit."""

    action: VectorStats
    state: VectorStats
    chunk: int = 1

    def to_dict(self) -> dict:
        return {"action": vars(self.action), "state": vars(self.state), "chunk": self.chunk,
                "hash": self.hash()}

    @classmethod
    def from_dict(cls, d: dict) -> Codec:
        try:
            codec = cls(VectorStats(**d["action"]), VectorStats(**d["state"]), int(d.get("chunk", 1)))
        except (KeyError, TypeError) as exc:
            raise CodecMismatch(f"codec: malformed statistics in checkpoint ({exc})") from None
        if "hash" in d and d["hash"] != codec.hash():
            raise CodecMismatch(f"codec: statistics hash {d['hash']} does not match their content "
                                f"({codec.hash()}); the checkpoint metadata was altered or corrupted")
        return codec

    def hash(self) -> str:
        body = json.dumps({"action": vars(self.action), "state": vars(self.state), "chunk": self.chunk},
                          sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def check_layout(self, action_names: list[str] | tuple[str, ...],
                     state_names: list[str] | tuple[str, ...]) -> None:
        """Raise CodecMismatch listing every difference between the checkpoint's layout and the robot's."""
        problems = []
        for what, mine, theirs in (("action", self.action.names, list(action_names)),
                                   ("state", self.state.names, list(state_names))):
            if list(mine) != theirs:
                problems.append(f"{what}: checkpoint has {len(mine)} dims {list(mine)}, "
                                f"robot has {len(theirs)} dims {theirs}")
        if problems:
            raise CodecMismatch("normalization statistics do not fit this robot: " + "; ".join(problems))

    def encode_actions(self, actions: np.ndarray) -> np.ndarray:
        """[H, A] robot units -> flat bins [H * A] (time-major)."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] != len(self.action.names):
            raise CodecMismatch(f"actions: expected [H, {len(self.action.names)}], got {actions.shape}")
        return self.action.to_bins(actions).reshape(-1)

    def decode_actions(self, bins: np.ndarray) -> np.ndarray:
        """Flat bins [H * A] -> [H, A] robot units."""
        a = len(self.action.names)
        bins = np.asarray(bins).reshape(-1)
        if bins.size % a:
            raise CodecMismatch(f"actions: {bins.size} bins is not a multiple of action dim {a}")
        return self.action.from_bins(bins.reshape(-1, a))

    def encode_state(self, state: np.ndarray) -> np.ndarray:
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        if state.size != len(self.state.names):
            raise CodecMismatch(f"state: expected {len(self.state.names)} values, got {state.size}")
        return self.state.to_bins(state)
