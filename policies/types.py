"""The data that crosses the policy boundary: observations in, action chunks out.

These types live beside the policies (which must not import the runtime) and are what the runtime,
the environments' adapters and the ROS bridge exchange. Only numpy is imported here, so a robot PC can
use them without torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, Union, runtime_checkable

import numpy as np

# A multimodal instruction: text and images (uint8 HxWx3) in order, e.g. ["put the", img, "into the", img2].
PromptPart = Union[str, np.ndarray]
Instruction = Union[str, Sequence[PromptPart]]


class InvalidObservation(ValueError):
    """An observation that must not reach the policy (wrong shape/dtype, NaN state, ...)."""


def check_image(name: str, image: object) -> np.ndarray:
    """Return `image` if it is a uint8 HxWx3 array, else raise a message naming what was wrong."""
    if not isinstance(image, np.ndarray):
        raise InvalidObservation(f"image {name!r}: expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InvalidObservation(f"image {name!r}: expected dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidObservation(f"image {name!r}: expected shape HxWx3, got {image.shape}")
    return image


@dataclass(frozen=True)
class ArraySpec:
    """Names, bounds and units of a vector (a robot's state or action)."""

    names: tuple[str, ...]
    low: np.ndarray
    high: np.ndarray
    units: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        low = np.asarray(self.low, dtype=np.float32).reshape(-1)
        high = np.asarray(self.high, dtype=np.float32).reshape(-1)
        if not (len(self.names) == low.size == high.size):
            raise ValueError(f"spec: {len(self.names)} names but {low.size} low / {high.size} high bounds")
        if np.any(low > high):
            raise ValueError(f"spec: low > high for {[n for n, a, b in zip(self.names, low, high) if a > b]}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "units", tuple(self.units))

    @property
    def dim(self) -> int:
        return len(self.names)


@dataclass
class Observation:
    """One snapshot of the robot: camera images, proprioception, the instruction, and when it was taken.

    `timestamp` is on the monotonic clock (seconds, `time.monotonic()`), so the runtime can measure age.
    """

    images: dict[str, np.ndarray]
    state: np.ndarray
    instruction: Instruction = ""
    timestamp: float = 0.0

    def validate(self, state_dim: int | None = None) -> Observation:
        """Raise `InvalidObservation` naming the first problem; return self when usable."""
        for name, image in self.images.items():
            check_image(name, image)
        state = np.asarray(self.state)
        if state.ndim != 1:
            raise InvalidObservation(f"state: expected a 1-D vector, got shape {state.shape}")
        if state_dim is not None and state.shape[0] != state_dim:
            raise InvalidObservation(f"state: expected {state_dim} values, got {state.shape[0]}")
        if not np.all(np.isfinite(state)):
            bad = np.flatnonzero(~np.isfinite(state)).tolist()
            raise InvalidObservation(f"state: non-finite values at indices {bad}")
        if not isinstance(self.instruction, str):
            for i, part in enumerate(self.instruction):
                if not isinstance(part, str):
                    check_image(f"instruction part {i}", part)
        if not np.isfinite(self.timestamp):
            raise InvalidObservation(f"timestamp: not finite ({self.timestamp})")
        return self


@dataclass
class ActionChunk:
    """H future actions in robot units, the first due at `start_time`, then one every `period` seconds."""

    actions: np.ndarray  # float32 [H, A]
    start_time: float
    period: float
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.actions = np.asarray(self.actions, dtype=np.float32)
        if self.actions.ndim == 1:
            self.actions = self.actions[None, :]
        if self.actions.ndim != 2 or self.actions.shape[0] < 1:
            raise ValueError(f"ActionChunk: expected actions of shape [H, A], got {self.actions.shape}")
        if not self.period > 0:
            raise ValueError(f"ActionChunk: period must be > 0, got {self.period}")

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])

    def index_at(self, t: float) -> int:
        """Index of the step due at time t (may be < 0 before the start or >= horizon after the end)."""
        return int(np.floor((t - self.start_time) / self.period + 1e-6))


# Called by a policy between decode steps of a long query, so the runtime can serve control first.
YieldHook = Callable[[], None]


@runtime_checkable
class Policy(Protocol):
    """Turns observations into action chunks and answers questions with the same model."""

    def reset(self) -> None: ...

    def act(self, obs: Observation) -> ActionChunk: ...

    def query(self, images: dict[str, np.ndarray], text: str, between_steps: YieldHook | None = None) -> str: ...
