"""Scripted experts: one per task, reading the privileged scene state, moving in straight bounded steps.

Each expert runs a small phase machine (approach, descend, grasp, lift, carry, release, ...) so its
demonstrations have clear, consistent phases for behaviour cloning. An expert notices a new episode
by the environment's `episode_id`, so one instance can be reused across resets.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from .scene import BIN_RIM_Z
from .tabletop_env import TabletopEnv
from .tasks import Reach

CRUISE = 0.03  # metres per step when far from the goal
FINE = 0.015  # metres per step for descending and placing
YAW_STEP = 0.2
OPEN, CLOSE = -1.0, 1.0
GRASP_Z_MIN = 0.026  # grip height that keeps the fingertips just off the table
CARRY_Z = 0.14


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def grasp_yaw(shape: str, object_yaw: float) -> float:
    """Gripper yaw that puts the pads on two faces of a cube (any yaw suits round objects)."""
    if shape != "cube":
        return 0.0
    return float((object_yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4)


class Expert:
    """Base: phase bookkeeping and the `move` primitive. `act(obs)` returns a float32 action."""

    def __init__(self, env: gym.Env):
        self.env: TabletopEnv = env.unwrapped
        self._episode = -1
        self.phase = ""
        self.phase_steps = 0

    def act(self, obs: dict) -> np.ndarray:
        if self.env.episode_id != self._episode:
            self._episode = self.env.episode_id
            self.start()
        self.phase_steps += 1
        return self.policy(obs).astype(np.float32)

    def goto(self, phase: str) -> None:
        self.phase, self.phase_steps = phase, 0

    def start(self) -> None:
        raise NotImplementedError

    def policy(self, obs: dict) -> np.ndarray:
        raise NotImplementedError

    def move(self, obs: dict, goal: np.ndarray, yaw: float, grip: float, speed: float = CRUISE):
        """Action towards (goal, yaw) along a straight line, and the remaining position/yaw error."""
        state = obs["state"]
        err = np.asarray(goal, dtype=float) - state[:3]
        dist = float(np.linalg.norm(err))
        step = err * min(1.0, speed / max(dist, 1e-9))
        yaw_err = _wrap(yaw - float(state[3]))
        action = np.array([*step, np.clip(yaw_err, -YAW_STEP, YAW_STEP), grip])
        return action, dist, abs(yaw_err)


class ReachExpert(Expert):
    def start(self):
        self.goto("reach")

    def policy(self, obs):
        action, _, _ = self.move(obs, Reach.goal(self.env), 0.0, OPEN)
        return action


class PickExpert(Expert):
    """Approach, descend, grasp and lift `target`; subclasses say what happens after the lift."""

    def start(self):
        self.goto("above")
        self.hold_offset = 0.0  # object centre z minus grip z, measured at the grasp

    def target(self) -> str:
        return self.env.episode.target

    def after_lift(self, obs) -> np.ndarray:
        action, _, _ = self.move(obs, self.lift_goal, self.yaw, CLOSE)
        return action

    def policy(self, obs):
        env, name = self.env, self.target()
        obj = env.object_pos(name)
        slot = env.slot(name)
        grasp_z = max(obj[2], GRASP_Z_MIN)
        if self.phase in ("above", "descend"):
            self.yaw = grasp_yaw(slot.shape, env.object_yaw(name))
        if self.phase == "above":
            goal = np.array([obj[0], obj[1], grasp_z + 0.1])
            action, dist, yaw_err = self.move(obs, goal, self.yaw, OPEN)
            if dist < 0.015 and yaw_err < 0.05:
                self.goto("descend")
            return action
        if self.phase == "descend":
            goal = np.array([obj[0], obj[1], grasp_z])
            action, dist, _ = self.move(obs, goal, self.yaw, OPEN, FINE)
            if dist < 0.006 or self.phase_steps > 20:
                self.grasp_at = goal
                self.goto("close")
            return action
        if self.phase == "close":
            action, _, _ = self.move(obs, self.grasp_at, self.yaw, CLOSE, FINE)
            if self.phase_steps >= 5:
                self.hold_offset = obj[2] - float(obs["state"][2])
                self.lift_goal = np.array([self.grasp_at[0], self.grasp_at[1], CARRY_Z])
                self.goto("lift")
            return action
        if self.phase == "lift":
            action, dist, _ = self.move(obs, self.lift_goal, self.yaw, CLOSE)
            if dist < 0.02:
                self.goto("after_lift")
            return action
        return self.after_lift(obs)


class PickByDescriptionExpert(PickExpert):
    pass


class PlaceExpert(PickExpert):
    """After lifting: carry over a place point, lower until the object is at `place_z`, open, retreat."""

    def place_point(self) -> tuple[np.ndarray, float]:
        """World xy above which to release, and the object centre height at release."""
        raise NotImplementedError

    def after_lift(self, obs):
        if self.phase == "after_lift":
            self.goto("carry")
        xy, obj_z = self.place_point()
        grip_z = obj_z - self.hold_offset
        if self.phase == "carry":
            goal = np.array([xy[0], xy[1], max(CARRY_Z, grip_z + 0.04)])
            action, dist, _ = self.move(obs, goal, self.yaw, CLOSE)
            if dist < 0.01:
                self.goto("lower")
            return action
        if self.phase == "lower":
            action, dist, _ = self.move(obs, np.array([xy[0], xy[1], grip_z]), self.yaw, CLOSE, FINE)
            if dist < 0.006 or self.phase_steps > 15:
                self.release_at = np.array([xy[0], xy[1], grip_z])
                self.goto("release")
            return action
        if self.phase == "release":
            action, _, _ = self.move(obs, self.release_at, self.yaw, OPEN, FINE)
            if self.phase_steps >= 4:
                self.goto("retreat")
            return action
        goal = self.release_at + np.array([0.0, 0.0, 0.08])
        action, _, _ = self.move(obs, goal, self.yaw, OPEN, FINE)
        return action


class PickPlaceExpert(PlaceExpert):
    def place_point(self):
        slot = self.env.slot(self.target())
        return self.env.bin_pos()[:2], BIN_RIM_Z + slot.half_height + 0.015


class StackExpert(PlaceExpert):
    def place_point(self):
        env = self.env
        top, base = env.slot(self.target()), env.slot(env.episode.support)
        base_pos = env.object_pos(base.name)
        return base_pos[:2], base_pos[2] + base.half_height + top.half_height + 0.006


class PushExpert(Expert):
    """Stand behind the object on the line to the zone, lower, and push along that line."""

    PUSH_Z = GRASP_Z_MIN
    SPEED = 0.02

    def start(self):
        self.goto("above")

    def policy(self, obs):
        env = self.env
        name = env.episode.target
        slot = env.slot(name)
        obj = env.object_pos(name)[:2]
        to_zone = env.zone_pos()[:2] - obj
        dist = float(np.linalg.norm(to_zone))
        u = to_zone / max(dist, 1e-9)
        behind = obj - u * (slot.radius + 0.03)
        grip = obs["state"][:2]
        rel = grip - obj
        lateral = abs(u[0] * rel[1] - u[1] * rel[0])
        if self.phase == "above":
            action, d, _ = self.move(obs, np.array([*behind, 0.08]), 0.0, CLOSE)
            if d < 0.01:
                self.goto("lower")
            return action
        if self.phase == "lower":
            action, d, _ = self.move(obs, np.array([*behind, self.PUSH_Z]), 0.0, CLOSE, FINE)
            if d < 0.008:
                self.goto("push")
            return action
        # push: aim at the contact point moved on along the line; re-approach if the pusher slipped off
        if lateral > 0.6 * slot.radius or float(rel @ u) > -0.5 * slot.radius:
            action, _, _ = self.move(obs, np.array([*grip, 0.08]), 0.0, CLOSE)
            self.goto("above")
            return action
        contact = obj - u * (slot.radius + 0.012)
        goal = contact + u * min(self.SPEED, dist)
        action, _, _ = self.move(obs, np.array([*goal, self.PUSH_Z]), 0.0, CLOSE, self.SPEED)
        return action


_EXPERTS = {
    "Reach": ReachExpert,
    "ReachOne": ReachExpert,
    "Push": PushExpert,
    "PickPlace": PickPlaceExpert,
    "Stack": StackExpert,
    "PickByDescription": PickByDescriptionExpert,
}


def make_expert(env: gym.Env) -> Expert:
    """The scripted expert for `env`'s task (works through wrappers)."""
    return _EXPERTS[env.unwrapped.task.name](env)
