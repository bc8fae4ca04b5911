"""Simple policies: baselines for evaluation and controllable loads for testing the runtime.

- `ZeroPolicy`: always the zero command (for delta/velocity robots: hold still).
- `RandomPolicy`: uniform samples inside the action bounds (a lower bound on task success).
- `ReplayPolicy`: plays back a recorded action sequence on the clock of the observations.
- `StandInPolicy`: spends a configurable compute time per chunk and per decode step of a query, so the
  runtime's timing can be benchmarked before (or without) the real model.

Every chunk starts at the observation's timestamp (`ActionChunk.start_time = obs.timestamp`): row 0 is
the command meant for the moment the observation was taken, and the runtime aligns a late chunk to
now with `ActionChunk.index_at`.
"""

from __future__ import annotations

import time

import numpy as np

from .types import ActionChunk, ArraySpec, Observation, YieldHook


def _check_horizon_period(horizon: int, period: float) -> None:
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if not period > 0:
        raise ValueError(f"period must be > 0 seconds, got {period}")


class _NoQueries:
    """Mixin for policies without a language model: a query is a clear error, never a made-up answer."""

    def query(self, images: dict[str, np.ndarray], text: str, between_steps: YieldHook | None = None) -> str:
        raise NotImplementedError(f"{type(self).__name__} has no language model and cannot answer queries")


class ZeroPolicy(_NoQueries):
    def __init__(self, action_spec: ArraySpec, horizon: int = 1, period: float = 0.05):
        _check_horizon_period(horizon, period)
        self.action_spec, self.horizon, self.period = action_spec, horizon, period

    def reset(self) -> None:
        pass

    def act(self, obs: Observation) -> ActionChunk:
        actions = np.zeros((self.horizon, self.action_spec.dim), np.float32)
        return ActionChunk(actions, start_time=obs.timestamp, period=self.period)


class RandomPolicy(_NoQueries):
    def __init__(self, action_spec: ArraySpec, horizon: int = 1, period: float = 0.05, seed: int = 0):
        _check_horizon_period(horizon, period)
        if not (np.all(np.isfinite(action_spec.low)) and np.all(np.isfinite(action_spec.high))):
            raise ValueError("RandomPolicy needs finite action bounds")
        self.action_spec, self.horizon, self.period, self.seed = action_spec, horizon, period, seed
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def act(self, obs: Observation) -> ActionChunk:
        spec = self.action_spec
        actions = self.rng.uniform(spec.low, spec.high, size=(self.horizon, spec.dim)).astype(np.float32)
        return ActionChunk(actions, start_time=obs.timestamp, period=self.period)


class ReplayPolicy(_NoQueries):
    """Replays `actions[T, A]`: row i is due `i * period` seconds after the first observation seen.

    Time-based, not call-based, so replanning every N ticks or a late chunk still replays the sequence at
    its recorded pace. Past the end the chunk is filled with `fill` (default zeros = hold still for
    delta robots), because repeating the last row would keep a velocity robot moving.
    """

    def __init__(self, actions: np.ndarray, horizon: int = 1, period: float = 0.05, fill: np.ndarray | None = None):
        _check_horizon_period(horizon, period)
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 2 or actions.shape[0] < 1:
            raise ValueError(f"ReplayPolicy: expected actions of shape [T, A], got {actions.shape}")
        if not np.all(np.isfinite(actions)):
            raise ValueError("ReplayPolicy: recorded actions contain NaN or inf")
        self.actions, self.horizon, self.period = actions, horizon, period
        self.fill = np.zeros(actions.shape[1], np.float32) if fill is None else np.asarray(fill, np.float32)
        if self.fill.shape != (actions.shape[1],):
            raise ValueError(f"ReplayPolicy: fill must have shape ({actions.shape[1]},), got {self.fill.shape}")
        self._t0: float | None = None

    def reset(self) -> None:
        self._t0 = None

    def act(self, obs: Observation) -> ActionChunk:
        if self._t0 is None:
            self._t0 = obs.timestamp
        first = int(np.floor((obs.timestamp - self._t0) / self.period + 0.5))
        rows = np.arange(first, first + self.horizon)
        inside = (rows >= 0) & (rows < len(self.actions))
        out = np.where(inside[:, None], self.actions[np.clip(rows, 0, len(self.actions) - 1)], self.fill)
        return ActionChunk(out, start_time=obs.timestamp, period=self.period, info={"replay_row": first})


def burn_cpu(seconds: float) -> None:
    """Do real numeric work for `seconds` (small matrix products: like a model, it holds the GIL in part)."""
    end = time.monotonic() + seconds
    a = np.full((32, 32), 1.0 / 32, np.float32)
    while time.monotonic() < end:
        a = a @ a
        a /= float(np.abs(a).max()) + 1e-6


class StandInPolicy:
    """A stand-in for the model with a known cost: `compute_ms` per chunk, `step_ms` per query decode step.

    Its chunk is a bounded proportional controller that drives the first A state values towards zero
    (for a point robot with velocity commands: go to the origin), so a closed loop with it actually
    moves. Its `query` decodes `query_steps` steps and calls `between_steps` after each, like the real
    model's generation loop; the runtime may call `act` from inside that hook, so the two keep no
    shared per-request state.
    """

    def __init__(
        self,
        action_spec: ArraySpec,
        horizon: int = 8,
        period: float = 0.05,
        compute_ms: float = 30.0,
        step_ms: float = 5.0,
        query_steps: int = 16,
        gain: float = 1.0,
    ):
        _check_horizon_period(horizon, period)
        if compute_ms < 0 or step_ms < 0 or query_steps < 1:
            raise ValueError(f"StandInPolicy: need compute_ms >= 0, step_ms >= 0, query_steps >= 1; got "
                             f"{compute_ms}, {step_ms}, {query_steps}")
        self.action_spec, self.horizon, self.period = action_spec, horizon, period
        self.compute_s, self.step_s, self.query_steps, self.gain = compute_ms / 1e3, step_ms / 1e3, query_steps, gain

    def reset(self) -> None:
        pass

    def act(self, obs: Observation) -> ActionChunk:
        burn_cpu(self.compute_s)
        spec = self.action_spec
        state = np.zeros(spec.dim, np.float32)
        n = min(spec.dim, np.asarray(obs.state).shape[0])
        state[:n] = np.asarray(obs.state, np.float32)[:n]
        # Predict the decay of the state under the controller over the horizon.
        decay = np.exp(-self.gain * self.period * np.arange(self.horizon, dtype=np.float32))[:, None]
        actions = np.clip(-self.gain * state[None, :] * decay, spec.low, spec.high)
        return ActionChunk(actions, start_time=obs.timestamp, period=self.period)

    def query(self, images: dict[str, np.ndarray], text: str, between_steps: YieldHook | None = None) -> str:
        for _ in range(self.query_steps):
            burn_cpu(self.step_s)
            if between_steps is not None:
                between_steps()
        brightness = {name: round(float(np.mean(img)), 1) for name, img in sorted(images.items())}
        return f"stand-in answer to {text!r}: mean brightness {brightness}"
