"""A light simulated robot that needs nothing but numpy: a planar point with velocity commands.

It exists so the runtime can be tested and benchmarked on a robot PC or CI machine without MuJoCo: a
real (if simple) simulation, integrating the commanded velocity through a first-order actuator lag,
stopping at the walls of a square workspace, and rendering a small top-down camera image.

State: [x, y, vx, vy] (m, m/s). Action: commanded velocity [vx, vy] in m/s, within +-max_speed; the
safe action is zero velocity. Success: within `goal_tolerance` of the goal.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from .protocols import ArraySpec, Observation


class PointRobot:
    def __init__(
        self,
        dt: float = 0.05,
        image_size: int = 64,
        max_speed: float = 0.5,
        goal: tuple[float, float] = (0.0, 0.0),
        goal_tolerance: float = 0.05,
        max_steps: int = 0,
        terminate_on_success: bool = False,
        actuator_tau: float = 0.05,
        instruction: str = "move to the green cross",
    ):
        if dt <= 0 or image_size < 8 or max_speed <= 0 or actuator_tau <= 0:
            raise ValueError(f"PointRobot: need dt > 0, image_size >= 8, max_speed > 0, actuator_tau > 0; got "
                             f"dt={dt}, image_size={image_size}, max_speed={max_speed}, actuator_tau={actuator_tau}")
        self.dt, self.size, self.tau = dt, image_size, actuator_tau
        self.goal, self.tolerance = np.asarray(goal, np.float32), goal_tolerance
        self.max_steps, self.terminate_on_success, self.instruction = max_steps, terminate_on_success, instruction
        self.action_spec = ArraySpec(("vx", "vy"), [-max_speed] * 2, [max_speed] * 2, ("m/s", "m/s"))
        self.state_spec = ArraySpec(("x", "y", "vx", "vy"), [-1, -1, -np.inf, -np.inf], [1, 1, np.inf, np.inf],
                                    ("m", "m", "m/s", "m/s"))
        self.safe_action = np.zeros(2, np.float32)
        self.commands: deque[tuple[float, np.ndarray]] = deque(maxlen=100_000)  # (time received, command)
        pix = (np.arange(image_size) + 0.5) / image_size * 2 - 1
        self._grid_x, self._grid_y = np.meshgrid(pix, -pix)  # image row 0 is y = +1
        self._rng = np.random.default_rng(0)
        self.reset()

    # ---- Robot protocol --------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> Observation:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.pos = self._rng.uniform(-0.8, 0.8, 2).astype(np.float32)
        self.vel = np.zeros(2, np.float32)
        self.steps = 0
        self.commands.clear()
        self._obs = self._make_observation()
        return self._obs

    def observe(self) -> Observation:
        return self._obs

    def act(self, action: np.ndarray) -> None:
        action = np.asarray(action, np.float32)
        if action.shape != (2,) or not np.all(np.isfinite(action)):
            raise ValueError(f"PointRobot.act: expected 2 finite values, got {action!r}")
        self.commands.append((time.monotonic(), action.copy()))
        command = np.clip(action, self.action_spec.low, self.action_spec.high)
        self.vel += (command - self.vel) * min(1.0, self.dt / self.tau)
        new = self.pos + self.vel * self.dt
        hit = np.abs(new) > 1.0
        self.pos = np.clip(new, -1.0, 1.0).astype(np.float32)
        self.vel[hit] = 0.0
        self.steps += 1
        self._obs = self._make_observation()

    def is_success(self) -> bool:
        return bool(np.linalg.norm(self.pos - self.goal) < self.tolerance)

    def is_done(self) -> bool:
        return bool((self.max_steps and self.steps >= self.max_steps)
                    or (self.terminate_on_success and self.is_success()))

    def close(self) -> None:
        pass

    # ---- rendering -------------------------------------------------------------------------------------
    def _make_observation(self) -> Observation:
        return Observation({"image": self.render()}, np.concatenate([self.pos, self.vel]).astype(np.float32),
                           self.instruction, time.monotonic())

    def render(self) -> np.ndarray:
        """Top-down view: grey floor, green cross at the goal, red disc at the point."""
        img = np.full((self.size, self.size, 3), 90, np.uint8)
        px = 2.0 / self.size
        gx, gy = self._grid_x - self.goal[0], self._grid_y - self.goal[1]
        cross = ((np.abs(gx) < 1.5 * px) | (np.abs(gy) < 1.5 * px)) & (np.maximum(np.abs(gx), np.abs(gy)) < 5 * px)
        img[cross] = (40, 200, 60)
        disc = (self._grid_x - self.pos[0]) ** 2 + (self._grid_y - self.pos[1]) ** 2 < (4 * px) ** 2
        img[disc] = (220, 40, 40)
        return img
