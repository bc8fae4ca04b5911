"""Motion primitives of the VIMA-style tasks, run as ordinary control steps of the tabletop arm.

One primitive action = a start pose and an end pose, each (x, y, yaw) on the table:
- pick-and-place: open above pose0, descend, close, lift; carry to above pose1 turning the hand from
  yaw0 to yaw1, lower until the held object (or a finger) touches something, open, lift away;
  when nothing was grasped the hand just goes back up (nothing is placed), as in VIMA-Bench.
- push: the closed hand goes down at pose0 and moves in a straight line to pose1 at table height.

The straight bounded moves are the scripted experts' `Expert.move`; the tabletop env's `step`
(differential IK + physics) executes them. No image is rendered during a primitive.
"""

from __future__ import annotations

import numpy as np

from uio_robot.envs.experts import CARRY_Z, CLOSE, CRUISE, FINE, GRASP_Z_MIN, OPEN, Expert
from uio_robot.envs.tabletop_env import TabletopEnv

from .scene import VimaScene

HOVER_Z = 0.12
PICK_Z = GRASP_Z_MIN + 0.002
LOWER_SPEED = 0.008
PUSH_SPEED = 0.01
MAX_YAW = np.pi / 2


class PrimitiveRunner(Expert):
    """Executes primitives on a `TabletopEnv` (made with `images=()`); `steps` counts control steps."""

    def __init__(self, env: TabletopEnv, scene: VimaScene):
        super().__init__(env)
        self.scene = scene
        self.steps = 0

    def _go(self, obs: dict, goal, yaw: float, grip: float, speed: float = CRUISE, tol: float = 0.006,
            max_steps: int = 60, stop=None) -> dict:
        for _ in range(max_steps):
            action, dist, yaw_err = self.move(obs, np.asarray(goal, dtype=float), yaw, grip, speed)
            if dist < tol and yaw_err < 0.03:
                break
            obs = self.env.step(action.astype(np.float32))[0]
            self.steps += 1
            if stop is not None and stop():
                break
        return obs

    def hold(self, obs: dict, grip: float, n: int) -> dict:
        """Keep the hand where it is for `n` control steps with the gripper at `grip`."""
        goal, yaw = obs["state"][:3].astype(float), float(obs["state"][3])
        for _ in range(n):
            action, _, _ = self.move(obs, goal, yaw, grip, FINE)
            obs = self.env.step(action.astype(np.float32))[0]
            self.steps += 1
        return obs

    def pick_place(self, obs: dict, pose0, pose1) -> dict:
        (x0, y0, yaw0), (x1, y1, yaw1) = _pose(pose0), _pose(pose1)
        obs = self._go(obs, [x0, y0, HOVER_Z], yaw0, OPEN)
        obs = self._go(obs, [x0, y0, PICK_Z], yaw0, OPEN, FINE, tol=0.004, max_steps=25)
        obs = self.hold(obs, CLOSE, 6)
        obs = self._go(obs, [x0, y0, CARRY_Z], yaw0, CLOSE, FINE, tol=0.01)
        held = self.scene.held_bodies()
        if not held:  # nothing grasped: open and stay up
            return self.hold(obs, OPEN, 3)
        obs = self._go(obs, [x1, y1, CARRY_Z], yaw1, CLOSE, tol=0.008, max_steps=80)
        obs = self._go(obs, [x1, y1, PICK_Z], yaw1, CLOSE, LOWER_SPEED, tol=0.003, max_steps=30,
                       stop=lambda: self.scene.touching_down(held))
        obs = self.hold(obs, OPEN, 5)
        obs = self._go(obs, [x1, y1, HOVER_Z], yaw1, OPEN, FINE, tol=0.02)
        return self.hold(obs, OPEN, 8)  # let what was placed come to rest

    def push(self, obs: dict, pose0, pose1) -> dict:
        (x0, y0, yaw0), (x1, y1, _) = _pose(pose0), _pose(pose1)
        obs = self._go(obs, [x0, y0, HOVER_Z], yaw0, CLOSE)
        obs = self._go(obs, [x0, y0, PICK_Z], yaw0, CLOSE, FINE, tol=0.004, max_steps=25)
        obs = self._go(obs, [x1, y1, PICK_Z], yaw0, CLOSE, PUSH_SPEED, tol=0.004, max_steps=120)
        obs = self._go(obs, [x1, y1, HOVER_Z], yaw0, CLOSE, FINE, tol=0.02)
        return self.hold(obs, CLOSE, 8)


def _pose(p) -> tuple[float, float, float]:
    x, y, yaw = (float(v) for v in p)
    return x, y, float(np.clip(yaw, -MAX_YAW, MAX_YAW))
