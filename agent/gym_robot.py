"""The one adapter from gymnasium to the runtime: any env with a Dict observation and a Box action.

Observation keys: `image` (uint8 HxWx3, required), `wrist_image` (optional), `state` (float vector,
required), `instruction` (optional text). Unknown keys are an error at construction, so a renamed key
cannot silently drop a camera. Each observation is stamped with `time.monotonic()` when the env
produced it, so the runtime measures its true age.

gymnasium is imported only by `make`, so this module loads where gymnasium is absent.
"""

from __future__ import annotations

import time

import numpy as np

from .protocols import ArraySpec, Observation
from .tracking import Increments

IMAGE_KEYS = ("image", "wrist_image")
KNOWN_KEYS = frozenset(IMAGE_KEYS + ("state", "instruction"))


def _box_spec(box, prefix: str, env) -> ArraySpec:
    """The spec of a 1-D Box; dimension names and units from the env's `<prefix>_names` / `<prefix>_units`
    attributes when it has them (else "action0", "action1", ...)."""
    shape = getattr(box, "shape", None)
    if shape is None or len(shape) != 1:
        raise ValueError(f"GymRobot: {prefix} space must be a 1-D Box, got {box}")
    names = tuple(getattr(env.unwrapped, f"{prefix}_names", ()) or (f"{prefix}{i}" for i in range(shape[0])))
    units = tuple(getattr(env.unwrapped, f"{prefix}_units", ()))
    if len(names) != shape[0] or units and len(units) != shape[0]:
        raise ValueError(f"GymRobot: env names {len(names)} {prefix} dims / {len(units)} units for a "
                         f"{shape[0]}-dim space")
    return ArraySpec(names, np.asarray(box.low, np.float32), np.asarray(box.high, np.float32), units)


class GymRobot:
    """A gymnasium env as a `Robot`. `act` steps the env (synchronously, in the caller's thread)."""

    def __init__(self, env, safe_action: np.ndarray | None = None):
        spaces = getattr(env.observation_space, "spaces", None)
        if spaces is None:
            raise ValueError(f"GymRobot: expected a Dict observation space, got {env.observation_space}")
        unknown = sorted(set(spaces) - KNOWN_KEYS)
        missing = sorted({"image", "state"} - set(spaces))
        if unknown or missing:
            raise ValueError(f"GymRobot: observation keys must be {sorted(KNOWN_KEYS)} (image and state "
                             f"required); unknown {unknown}, missing {missing}")
        self.env = env
        self.action_spec = _box_spec(env.action_space, "action", env)
        self.state_spec = _box_spec(spaces["state"], "state", env)
        # the env's `action_increments` {action: state} and `angle_states`, when it declares them
        self.increments = Increments.from_names(getattr(env.unwrapped, "action_increments", {}), self.action_spec,
                                                self.state_spec, tuple(getattr(env.unwrapped, "angle_states", ())))
        if safe_action is None and np.all(self.action_spec.low <= 0) and np.all(self.action_spec.high >= 0):
            safe_action = np.zeros(self.action_spec.dim, np.float32)  # zero delta = hold still
        self.safe_action = None if safe_action is None else np.asarray(safe_action, np.float32)
        self._obs: Observation | None = None
        self._terminated = self._truncated = False
        self._info: dict = {}

    @classmethod
    def make(cls, env_id: str, safe_action: np.ndarray | None = None, **kwargs) -> GymRobot:
        """`gymnasium.make(env_id, **kwargs)` wrapped; registers the project's envs first if present."""
        import gymnasium

        try:
            import uio_robot.envs  # noqa: F401  (registers uio_robot/* ids, when the suite is installed)
        except ImportError:
            pass
        return cls(gymnasium.make(env_id, **kwargs), safe_action=safe_action)

    def _convert(self, raw: dict) -> Observation:
        images = {k: np.asarray(raw[k]) for k in IMAGE_KEYS if k in raw}
        instruction = raw.get("instruction", "")
        return Observation(images, np.asarray(raw["state"], np.float32),
                           instruction if isinstance(instruction, str) else str(instruction), time.monotonic())

    def reset(self, seed: int | None = None) -> Observation:
        raw, self._info = self.env.reset(seed=seed)
        self._terminated = self._truncated = False
        self._obs = self._convert(raw)
        return self._obs

    def observe(self) -> Observation:
        if self._obs is None:
            raise RuntimeError("GymRobot.observe before reset")
        return self._obs

    def act(self, action: np.ndarray) -> None:
        raw, _, self._terminated, self._truncated, self._info = self.env.step(
            np.asarray(action).astype(self.env.action_space.dtype))
        self._obs = self._convert(raw)

    def is_done(self) -> bool:
        return bool(self._terminated or self._truncated)

    def is_success(self) -> bool:
        return bool(self._info.get("is_success", False))

    def close(self) -> None:
        self.env.close()
