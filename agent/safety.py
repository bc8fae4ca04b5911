"""The safety filter: the one place where an intended command becomes the command the robot receives.

Each check is a pure function (array in, array and a flag out) with its own tests; `SafetyFilter`
composes them in a fixed order and counts every intervention by reason. Order, and why:

1. e-stop latch        -> safe action. Overrides everything; stays engaged until `reset_estop()`.
2. observation checks  -> safe action. A stale or invalid observation means the command was computed
                          for a world that is no longer there (staleness watchdog).
3. non-finite values   -> safe action. NaN/inf never reach a motor, and cannot be "clamped" sensibly.
4. workspace bounds    -> shrink the position part so the predicted end-effector position stays inside.
5. rate limit          -> limit the change from the previous command sent.
6. clamp               -> the robot's per-dimension bounds; last, so the output is always within them.

The safe action (1-3) is sent as is: stopping must not be slowed down by the rate limit.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .config import SafetyConfig
from .protocols import ArraySpec, Observation

log = logging.getLogger(__name__)

# Reasons, as counted and logged.
ESTOP = "estop"
STALE_OBSERVATION = "stale_observation"
INVALID_OBSERVATION = "invalid_observation"
NONFINITE_ACTION = "nonfinite_action"
WRONG_SHAPE = "wrong_shape"
WORKSPACE = "workspace"
RATE_LIMIT = "rate_limit"
CLAMP = "clamp"


def clamp(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, bool]:
    """Clip each dimension to [low, high]; flag whether anything changed."""
    out = np.clip(action, low, high)
    return out, bool(np.any(out != action))


def rate_limit(action: np.ndarray, previous: np.ndarray, max_step: np.ndarray) -> tuple[np.ndarray, bool]:
    """Limit |action - previous| to `max_step` per dimension (max rate x time between commands)."""
    out = previous + np.clip(action - previous, -max_step, max_step)
    return out.astype(action.dtype), bool(np.any(out != action))


def workspace_limit(
    action: np.ndarray,
    position: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    action_indices: np.ndarray,
    delta_gain: float | None,
) -> tuple[np.ndarray, bool]:
    """Keep the commanded end-effector position inside the box [low, high].

    `action[action_indices]` is either an absolute target position (`delta_gain=None`) or a delta with
    predicted next position `position + delta_gain * action[action_indices]` (for a velocity command,
    delta_gain is the time between commands). The command is changed only as much as needed.
    """
    out = action.copy()
    part = action[action_indices]
    if delta_gain is None:
        new = np.clip(part, low, high)
    else:
        target = np.clip(position + delta_gain * part, low, high)
        inside = (position + delta_gain * part >= low) & (position + delta_gain * part <= high)
        new = np.where(inside, part, (target - position) / delta_gain)
    out[action_indices] = new
    return out, bool(np.any(new != part))


def is_finite(action: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(action)))


def is_stale(obs_timestamp: float, now: float, max_age_s: float) -> bool:
    """Watchdog: an observation older than `max_age_s` (or from the future, a clock bug) is stale."""
    age = now - obs_timestamp
    return not (-1e-3 <= age <= max_age_s)


class EStopLatch:
    """An emergency stop that, once triggered (from any thread), stays engaged until `reset()` is called."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: str | None = None

    def trigger(self, reason: str = "e-stop") -> None:
        with self._lock:
            if self._reason is None:
                self._reason = reason
                log.warning("e-stop engaged: %s", reason)

    def reset(self) -> None:
        with self._lock:
            if self._reason is not None:
                log.warning("e-stop reset (was: %s)", self._reason)
            self._reason = None

    @property
    def engaged(self) -> bool:
        return self._reason is not None

    @property
    def reason(self) -> str | None:
        return self._reason


@dataclass
class FilterResult:
    action: np.ndarray  # what the robot receives
    reasons: list[str] = field(default_factory=list)  # interventions on this command, in order

    @property
    def intervened(self) -> bool:
        return bool(self.reasons)


class SafetyFilter:
    """Composes the checks above for one robot. Every command the runtime sends goes through `filter`.

    `safe_action` is what "stop" means for this robot: zeros for delta or velocity commands (hold still),
    the current joint positions for a position-controlled arm would be passed in by its adapter.
    `period_s` is the time between commands (for the rate limit and the velocity workspace prediction).
    """

    def __init__(self, spec: ArraySpec, cfg: SafetyConfig, period_s: float, safe_action: np.ndarray | None = None):
        self.spec, self.cfg, self.period_s = spec, cfg, period_s
        if cfg.safe_action:
            safe_action = np.asarray(cfg.safe_action, np.float32)
        self.safe_action = (np.zeros(spec.dim, np.float32) if safe_action is None
                            else np.asarray(safe_action, np.float32).reshape(-1))
        if self.safe_action.shape != (spec.dim,):
            raise ValueError(f"safety.safe_action: expected {spec.dim} values, got {self.safe_action.shape[0]}")
        if not is_finite(self.safe_action) or np.any(self.safe_action < spec.low) or np.any(
                self.safe_action > spec.high):
            raise ValueError(f"safety.safe_action {self.safe_action.tolist()} is outside the action bounds")
        self.max_step = None
        if cfg.max_rate:
            rate = np.asarray(cfg.max_rate, np.float32)
            if rate.shape != (spec.dim,) or np.any(rate <= 0):
                raise ValueError(f"safety.max_rate: expected {spec.dim} positive values, got {cfg.max_rate}")
            self.max_step = rate * period_s
        self.workspace = None
        if cfg.workspace_low or cfg.workspace_high:
            low, high = np.asarray(cfg.workspace_low, np.float32), np.asarray(cfg.workspace_high, np.float32)
            s_idx, a_idx = np.asarray(cfg.position_state_indices, int), np.asarray(cfg.position_action_indices, int)
            if not (low.size == high.size == s_idx.size == a_idx.size > 0) or np.any(low > high):
                raise ValueError("safety.workspace_low/high and position_state/action_indices must have one "
                                 "entry per position axis, with low <= high")
            if np.any(a_idx >= spec.dim) or np.any(a_idx < 0):
                raise ValueError(f"safety.position_action_indices {a_idx.tolist()} out of range for {spec.dim}")
            gain = {"absolute": None, "delta": cfg.delta_gain, "velocity": period_s}[cfg.position_mode]
            self.workspace = (low, high, s_idx, a_idx, gain)
        self.estop = EStopLatch()
        self.counts: Counter[str] = Counter()
        self._previous = self.safe_action.copy()
        self._last_reasons: frozenset[str] = frozenset()

    def reset(self) -> None:
        """New episode: the rate limit starts from the safe action again. The e-stop is NOT reset here."""
        self._previous = self.safe_action.copy()

    def filter(self, action: np.ndarray | None, obs: Observation | None, now: float,
               obs_problem: str | None = None) -> FilterResult:
        """Return the command to send for the intended `action` computed from `obs`.

        `obs_problem` is a reason the caller already found the observation unusable (e.g. invalid).
        `action=None` means the runtime has nothing to send but the safe action.
        """
        reasons: list[str] = []
        out = self._check_unsafe(action, obs, now, obs_problem, reasons)
        if out is None:
            out = np.asarray(action, np.float32).copy()
            if self.cfg.enabled:
                out = self._shape_command(out, obs, reasons)
        self._previous = out
        self._count(reasons)
        return FilterResult(out, reasons)

    def _check_unsafe(self, action, obs, now, obs_problem, reasons: list[str]) -> np.ndarray | None:
        """The checks whose outcome is the safe action; None when the command may go on to shaping."""
        if self.estop.engaged:
            reasons.append(ESTOP)
        elif obs_problem is not None:
            reasons.append(obs_problem)
        elif obs is not None and self.cfg.enabled and is_stale(obs.timestamp, now, self.cfg.max_obs_age_s):
            reasons.append(STALE_OBSERVATION)
        elif action is None:
            return self.safe_action.copy()
        elif np.shape(action) != (self.spec.dim,):
            reasons.append(WRONG_SHAPE)
        elif not is_finite(np.asarray(action)):
            reasons.append(NONFINITE_ACTION)
        else:
            return None
        return self.safe_action.copy()

    def _shape_command(self, out: np.ndarray, obs: Observation | None, reasons: list[str]) -> np.ndarray:
        if self.workspace is not None and obs is not None:
            low, high, s_idx, a_idx, gain = self.workspace
            out, hit = workspace_limit(out, np.asarray(obs.state, np.float32)[s_idx], low, high, a_idx, gain)
            if hit:
                reasons.append(WORKSPACE)
        if self.max_step is not None:
            out, hit = rate_limit(out, self._previous, self.max_step)
            if hit:
                reasons.append(RATE_LIMIT)
        if self.cfg.clamp:
            out, hit = clamp(out, self.spec.low, self.spec.high)
            if hit:
                reasons.append(CLAMP)
        return out

    def _count(self, reasons: list[str]) -> None:
        self.counts.update(reasons)
        # Log when a kind of intervention starts, not on every tick it persists (20+ Hz would flood the log).
        current = frozenset(reasons)
        for reason in sorted(current - self._last_reasons):
            log.warning("safety intervention: %s", reason)
        self._last_reasons = current
