"""Chunk tracking: increments played as a path anchored at the state the policy saw (agent/tracking.py)."""

import time

import numpy as np
import pytest

from uio_robot.agent.config import ConfigError, LoopConfig, load_config
from uio_robot.agent.loop import ControlLoop
from uio_robot.agent.protocols import ActionChunk, ArraySpec, Observation
from uio_robot.agent.tracking import ChunkTracker, Increments
from uio_robot.policies.simple import StandInPolicy

ACTIONS = ArraySpec(("dx", "dyaw", "grip"), [-0.05, -0.3, -1.0], [0.05, 0.3, 1.0])
STATE = ArraySpec(("x", "yaw", "opening"), [-np.inf] * 3, [np.inf] * 3)
INC = Increments.from_names({"dx": "x", "dyaw": "yaw"}, ACTIONS, STATE, angles=("yaw",))
PERIOD = 0.05


def test_unknown_names_are_named():
    with pytest.raises(ValueError, match=r"\['dz', 'z'\]"):
        Increments.from_names({"dx": "x", "dz": "z"}, ACTIONS, STATE)
    assert not Increments.from_names({}, ACTIONS, STATE)


def test_a_robot_that_follows_exactly_gets_the_rows_back():
    rows = np.array([[0.01, 0.1, 1.0], [0.02, -0.05, 0.5], [-0.01, 0.0, -1.0]], np.float32)
    tracker, state = ChunkTracker(INC), np.array([0.3, 0.2, 0.04])
    chunk = tracker.anchor(ActionChunk(rows, 0.0, PERIOD), state)
    np.testing.assert_allclose(chunk.actions[:, 0], 0.3 + np.cumsum(rows[:, 0]), atol=1e-6)
    for row, target in zip(rows, chunk.actions):
        np.testing.assert_allclose(tracker.step(target, state), row, atol=1e-6)  # gripper passes through
        state = state + np.array([row[0], row[1], 0.0])


def test_motion_since_the_request_is_made_up_and_angles_wrap():
    tracker = ChunkTracker(INC)
    chunk = tracker.anchor(ActionChunk(np.array([[0.01, 0.1, 0.0]] * 4, np.float32), 0.0, PERIOD),
                           np.array([0.0, np.pi - 0.05, 0.0]))
    # two rows were dropped and the arm drifted back 5 mm meanwhile: row 2's target is 3 rows ahead
    step = tracker.step(chunk.actions[2], np.array([-0.005, -np.pi + 0.1, 0.0]))
    assert step[0] == pytest.approx(0.035, abs=1e-6)
    assert step[1] == pytest.approx(0.3 - 0.05 - 0.1, abs=1e-5)  # across +-pi, not -2 pi


class Rail:
    """A simulated slide on a rail: each tick it moves by `response` x the commanded increment. Like
    GymRobot, an observation is stamped when the motion that produced it ended."""

    action_spec, state_spec, increments = ACTIONS, STATE, INC
    safe_action = np.zeros(3, np.float32)

    def __init__(self, response=1.0):
        self.response, self.state, self.stamp = response, np.zeros(3), time.monotonic()

    def reset(self, seed=None):
        self.state, self.stamp = np.zeros(3), time.monotonic()
        return self.observe()

    def observe(self):
        return Observation({"image": np.zeros((8, 8, 3), np.uint8)}, self.state.astype(np.float32), "slide",
                           self.stamp)

    def act(self, action):
        self.state[:2] += self.response * np.asarray(action[:2], np.float64)
        self.stamp = time.monotonic()

    def is_done(self):
        return False

    def is_success(self):
        return False

    def close(self):
        pass


class SlowConstantPolicy(StandInPolicy):
    """Eight rows of +1 cm from the state it saw, answered 2.5 periods late (a model slower than a tick)."""

    def __init__(self):
        super().__init__(ACTIONS, horizon=8, period=PERIOD, compute_ms=0)
        self.seen: list[float] = []

    def act(self, obs):
        self.seen.append(float(obs.state[0]))
        time.sleep(2.5 * PERIOD)
        return ActionChunk(np.tile(np.array([0.01, 0.0, 0.0], np.float32), (8, 1)), obs.timestamp, PERIOD)


@pytest.mark.parametrize("track", [True, False])
def test_a_late_chunk_still_reaches_its_path_end_only_with_tracking(track):
    robot, policy = Rail(), SlowConstantPolicy()
    cfg = LoopConfig(rate_hz=1 / PERIOD, replan_every=100, track_chunks=track, spin_s=0.0005)
    with ControlLoop(robot, policy, cfg) as loop:  # ticks 0-7: exactly the first chunk's rows
        summary = loop.run(max_ticks=8)
    dropped = summary["dropped_steps"]
    assert 2 <= dropped <= 6  # the rows due while the model ran were never played
    # tracking: the path's end, although rows were dropped; without: only the rows played
    expected = policy.seen[0] + (0.08 if track else 0.01 * (8 - dropped))
    assert robot.state[0] == pytest.approx(expected, abs=1e-5)


def test_ros_increments_are_checked_against_the_names():
    assert load_config([]).ros.increments["dx"] == "grip_x"
    velocity_robot = ["ros.action_names=[vx,vy]", "ros.action_low=[-1,-1]", "ros.action_high=[1,1]",
                      "ros.command_names=[vx,vy]"]
    with pytest.raises(ConfigError, match="ros.increments"):
        load_config(velocity_robot + ["loop.track_chunks=true"])
    load_config(velocity_robot)  # tracking off: the tabletop's increments are not checked


def test_the_tabletop_declares_its_increments():
    from uio_robot.agent.gym_robot import GymRobot

    robot = GymRobot.make("uio_robot/Reach-v0", image_size=32)
    try:
        names = [(robot.action_spec.names[a], robot.state_spec.names[s])
                 for a, s in zip(robot.increments.action, robot.increments.state)]
        assert names == [("dx", "grip_x"), ("dy", "grip_y"), ("dz", "grip_z"), ("dyaw", "grip_yaw")]
        assert robot.increments.angle == (False, False, False, True)
    finally:
        robot.close()


@pytest.mark.parametrize("wait", [0.0, 0.04])
def test_same_tick_wait_plays_row_zero_of_the_fresh_chunk(wait):
    """loop.act_wait_s: the tick that sends a request waits for its chunk, so nothing is dropped and each
    tick's command comes from the observation it just read; without the wait, row 0 is always late."""
    robot = Rail()
    policy = StandInPolicy(ACTIONS, horizon=6, period=PERIOD, compute_ms=10)
    cfg = LoopConfig(rate_hz=1 / PERIOD, replan_every=1, act_wait_s=wait, spin_s=0.0005)
    with ControlLoop(robot, policy, cfg) as loop:
        summary = loop.run(max_ticks=20)
    assert summary["latency_ms"]["n"] >= 18  # a chunk (nearly) every tick either way
    if wait:  # each chunk taken on its own tick: row 0 played, nothing dropped (a rare slow request aside)
        assert summary["dropped_steps"] <= 2 and summary["overruns"] == 0
    else:  # each chunk taken a tick later: its row 0 is always in the past
        assert summary["dropped_steps"] >= 15


def test_same_tick_wait_must_leave_the_tick_room():
    with pytest.raises(ConfigError, match="loop.act_wait_s"):
        load_config(["loop.rate_hz=20", "loop.act_wait_s=0.05"])
    assert load_config(["loop.rate_hz=20", "loop.act_wait_s=0.04"]).loop.act_wait_s == 0.04
