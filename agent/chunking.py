"""Action chunks on the clock: which action is due now, given the chunks received so far.

A chunk's row i is due at `start_time + i * period` (the policy stamps `start_time` with the
observation's time). The executor always answers for an absolute time, so a chunk that arrives late is
aligned to now by construction: the rows whose time has passed are never executed (counted in
`dropped_steps`), and the rest play at their scheduled times.

Without ensembling the newest chunk wins. With temporal ensembling (ACT-style), every chunk that still
covers `t` votes, weighted by `exp(-decay * i)` where i is how many steps into that chunk `t` is: a
fresh prediction weighs more than an old one's far-future guess; `decay=0` is a plain average. This
smooths the seams between chunks at the cost of reacting more slowly.
"""

from __future__ import annotations

import numpy as np

from .protocols import ActionChunk


class ChunkExecutor:
    def __init__(self, temporal_ensemble: bool = False, decay: float = 0.5):
        if decay < 0:
            raise ValueError(f"ensemble decay must be >= 0, got {decay}")
        self.temporal_ensemble, self.decay = temporal_ensemble, decay
        self._chunks: list[ActionChunk] = []
        self.dropped_steps = 0  # rows of arriving chunks that were already in the past

    def reset(self) -> None:
        self._chunks.clear()
        self.dropped_steps = 0

    def add(self, chunk: ActionChunk, now: float) -> int:
        """Accept a chunk that arrived at `now`; return how many of its rows were already stale."""
        stale = int(np.clip(chunk.index_at(now), 0, chunk.horizon))
        self.dropped_steps += stale
        if self.temporal_ensemble:
            self._chunks.append(chunk)
        else:
            self._chunks = [chunk]
        return stale

    def action_at(self, t: float) -> np.ndarray | None:
        """The action due at time t, or None when no chunk covers t (the chunk ran out)."""
        self._chunks = [c for c in self._chunks if c.index_at(t) < c.horizon]
        rows, weights = [], []
        for chunk in self._chunks:
            i = chunk.index_at(t)
            if i >= 0:
                rows.append(chunk.actions[i])
                weights.append(np.exp(-self.decay * i))
        if not rows:
            return None
        if len(rows) == 1:
            return rows[0].copy()
        w = np.asarray(weights, np.float64)
        return (np.tensordot(w / w.sum(), np.stack(rows), axes=1)).astype(np.float32)

    def remaining_at(self, t: float) -> int:
        """How many more steps (including the one due at t) the newest chunk covers."""
        if not self._chunks:
            return 0
        newest = self._chunks[-1]
        return max(0, newest.horizon - max(newest.index_at(t), 0))
