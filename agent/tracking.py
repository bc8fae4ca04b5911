"""Chunk tracking: play the displacement part of an action chunk as a path, so latency cannot shift it.

Many robots (the tabletop arm among them) take *increments*: action `dx` moves the state `grip_x` by
about `dx` within one tick. A policy predicts a chunk of increments from the state it saw. Played as
given, a chunk that arrives L ticks late starts at row L from wherever the previous chunk left the arm,
so the whole remaining path is shifted by the rows that were dropped and by the motion that happened
meanwhile. Tracking removes both errors: when a chunk arrives, its increments become absolute targets,
anchored at the state the policy saw (`target_i = state + a_0 + ... + a_i`), and each tick commands the
step from the measured state to the target due now. Dimensions the robot does not declare as increments
(the gripper) play as given.

The loop turns it on with `loop.track_chunks=true`. With the shipped model it is not a clear win, so it
is off by default; the measurements are in agent/README.md ("Chunk tracking").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from .protocols import ActionChunk, ArraySpec


@dataclass(frozen=True)
class Increments:
    """Which action dims increment which state dims (index pairs), and which of those are angles."""

    action: tuple[int, ...]
    state: tuple[int, ...]
    angle: tuple[bool, ...]

    @classmethod
    def from_names(cls, mapping: Mapping[str, str], action_spec: ArraySpec, state_spec: ArraySpec,
                   angles: tuple[str, ...] = ()) -> Increments:
        """From {action name: state name}; `angles` names the state dims to compare modulo 2 pi."""
        bad = [a for a in mapping if a not in action_spec.names] + [s for s in mapping.values()
                                                                     if s not in state_spec.names]
        if bad:
            raise ValueError(f"increments: unknown names {bad} (actions {list(action_spec.names)}, "
                             f"state {list(state_spec.names)})")
        return cls(tuple(action_spec.names.index(a) for a in mapping),
                   tuple(state_spec.names.index(s) for s in mapping.values()),
                   tuple(s in angles for s in mapping.values()))

    def __bool__(self) -> bool:
        return bool(self.action)


class ChunkTracker:
    """Turns increment rows into absolute targets at arrival, and targets back into steps at each tick."""

    def __init__(self, increments: Increments):
        self.inc = increments
        self._a, self._s = list(increments.action), list(increments.state)
        self._angle = np.asarray(increments.angle, bool)

    def anchor(self, chunk: ActionChunk, state: np.ndarray) -> ActionChunk:
        """The chunk with its increment columns replaced by targets on the path from `state`."""
        rows = chunk.actions.astype(np.float64)
        path = np.cumsum(rows[:, self._a], axis=0)
        rows[:, self._a] = np.asarray(state, np.float64)[self._s] + path
        return replace(chunk, actions=rows.astype(np.float32), info={**chunk.info, "tracked": True})

    def step(self, target_row: np.ndarray, state: np.ndarray) -> np.ndarray:
        """The command that moves the measured `state` to the targets of `target_row` (others unchanged)."""
        row = np.array(target_row, np.float64)
        diff = row[self._a] - np.asarray(state, np.float64)[self._s]
        diff[self._angle] = (diff[self._angle] + np.pi) % (2 * np.pi) - np.pi
        row[self._a] = diff
        return row.astype(np.float32)
