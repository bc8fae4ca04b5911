"""The two interfaces the runtime drives: a `Robot` (sim or real) and a `Policy` (re-exported).

The runtime knows these protocols, never their implementations.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from uio_robot.policies.types import (
    ActionChunk,
    ArraySpec,
    InvalidObservation,
    Observation,
    Policy,
    YieldHook,
)

__all__ = ["ActionChunk", "ArraySpec", "InvalidObservation", "Observation", "Policy", "Robot", "YieldHook"]


@runtime_checkable
class Robot(Protocol):
    """Something that can be observed and commanded: a gymnasium env through an adapter, or ROS 2 topics."""

    action_spec: ArraySpec
    state_spec: ArraySpec

    def reset(self, seed: int | None = None) -> Observation: ...

    def observe(self) -> Observation:
        """The newest observation; must not block for longer than a fraction of a control period."""
        ...

    def act(self, action: np.ndarray) -> None:
        """Send one command (float32 [A], robot units) that already passed the safety filter."""
        ...

    def is_done(self) -> bool: ...

    def is_success(self) -> bool: ...

    def close(self) -> None: ...
