"""The gymnasium adapter, on a small env defined here (a 1-D cart that renders a coloured bar)."""

import gymnasium as gym
import numpy as np
import pytest

from uio_robot.agent.config import LoopConfig
from uio_robot.agent.gym_robot import GymRobot
from uio_robot.agent.loop import ControlLoop
from uio_robot.agent.protocols import Robot
from uio_robot.policies.simple import StandInPolicy


class CartEnv(gym.Env):
    """A cart on a rail: state [x, v], action = velocity; success within 0.05 of x=0."""

    def __init__(self, extra_key=False, max_steps=30):
        spaces = {"image": gym.spaces.Box(0, 255, (16, 16, 3), np.uint8),
                  "state": gym.spaces.Box(-np.inf, np.inf, (2,), np.float64),
                  "instruction": gym.spaces.Text(64)}
        if extra_key:
            spaces["depth"] = gym.spaces.Box(0, 1, (16, 16), np.float32)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.max_steps = max_steps

    def _obs(self):
        img = np.zeros((16, 16, 3), np.uint8)
        img[:, int(np.clip((self.x + 1) * 7.5, 0, 15))] = (255, 0, 0)
        return {"image": img, "state": np.array([self.x, self.v]), "instruction": "centre the cart"}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.v, self.t = float(self.np_random.uniform(0.5, 0.9)), 0.0, 0
        return self._obs(), {}

    def step(self, action):
        self.v = float(action[0])
        self.x += 0.05 * self.v
        self.t += 1
        success = abs(self.x) < 0.05
        return self._obs(), -abs(self.x), success, self.t >= self.max_steps, {"is_success": success}


def test_specs_observation_and_stepping():
    robot = GymRobot(CartEnv())
    assert isinstance(robot, Robot)
    assert robot.action_spec.dim == 1 and robot.state_spec.dim == 2
    assert robot.action_spec.high.tolist() == [1.0] and np.all(robot.safe_action == 0)
    first = robot.reset(seed=1)
    assert first.instruction == "centre the cart" and first.images["image"].shape == (16, 16, 3)
    assert first.state.dtype == np.float32
    first.validate(robot.state_spec.dim)
    robot.act(np.array([-1.0], np.float32))
    second = robot.observe()
    assert second.timestamp >= first.timestamp
    assert second.state[0] == pytest.approx(first.state[0] - 0.05)
    assert not robot.is_done() and not robot.is_success()


def test_done_and_success_come_from_the_env():
    robot = GymRobot(CartEnv(max_steps=3))
    robot.reset(seed=0)
    for _ in range(3):
        robot.act(np.zeros(1, np.float32))
    assert robot.is_done() and not robot.is_success()


def test_unknown_or_missing_keys_are_clear_errors():
    with pytest.raises(ValueError, match="unknown \\['depth'\\]"):
        GymRobot(CartEnv(extra_key=True))
    env = CartEnv()
    env.observation_space = gym.spaces.Dict({"image": env.observation_space["image"]})
    with pytest.raises(ValueError, match="missing \\['state'\\]"):
        GymRobot(env)


def test_closed_loop_through_the_adapter_reaches_the_goal():
    robot = GymRobot(CartEnv(max_steps=400))
    policy = StandInPolicy(robot.action_spec, horizon=4, period=0.02, compute_ms=1, gain=4.0)
    with ControlLoop(robot, policy, LoopConfig(rate_hz=50, replan_every=2)) as loop:
        summary = loop.run(max_ticks=200, seed=2)
    assert robot.is_success() and robot.is_done()
    assert summary["ticks"] < 200  # ended by the env's success, not by the tick limit
