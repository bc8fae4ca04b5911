"""The ROS 2 nodes across processes over real DDS (loopback only, one domain per test).

- end to end: `uio-robot ros-sim` and `uio-robot ros-agent` talk; the shipped default model reaches the
  object at the configured rate while a query is answered; the episode is recorded to an mcap bag.
- robustness: the test plays the robot; bad images, bad joint states, a burst, a silent camera and the
  e-stop each lead to the stop command with the reason in the node's log, and the node keeps running.
- command types: twist (with the gripper on command_extra) executed by the sim; joint trajectories and
  the empty trajectory as the stop command.
"""

from __future__ import annotations

import json
import math
import threading
import time

import gymnasium
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import TwistStamped
from ros_harness import NodeProcess, Peer, next_domain, ros_environment
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from uio_robot.bridges.ros import conversions as cv
from uio_robot.bridges.ros.bag import read_bag
from uio_robot.envs import STATE_NAMES

E2E_SEED = 100003  # a held-out Reach scene the shipped model reaches in lock step
JOINTS = [f"joint{i}" for i in range(1, 8)]
EE = ["grip_x", "grip_y", "grip_z", "grip_yaw", "gripper_opening"]


@pytest.fixture
def ros(tmp_path, monkeypatch):
    """(domain env, start(command, args) -> NodeProcess, Peer); every process is ended afterwards."""
    domain = next_domain()
    env = ros_environment(domain, tmp_path / "ros_log")
    for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR"):
        monkeypatch.setenv(key, env[key])
    procs: list[NodeProcess] = []

    def start(command: str, args: list[str]) -> NodeProcess:
        proc = NodeProcess(command, args, env, tmp_path / f"{command}-{len(procs)}.log")
        procs.append(proc)
        return proc
    peer = Peer(domain)
    yield env, start, peer
    peer.close()
    for proc in procs:
        proc.stop()


def test_end_to_end_sim_and_agent_with_a_query_and_a_bag(ros, tmp_path):
    env, start, peer = ros
    # The shipped default model drives the arm (no policy.checkpoint: the default) on a held-out Reach scene.
    # The episode runs all its ticks (ros.stop_on_success=false) so the query is answered inside it.
    # The sim steps once per command (ros.sim_lockstep), the dynamics the model was trained in. 3 Hz with one
    # model step per tick (policy.period_s), and each tick waits up to 300 ms for the chunk of the observation
    # it just read (loop.act_wait_s): a request takes about 100 ms on an idle core here, up to 350 ms beside a
    # training job, so the loop plays row 0 of each chunk as lock-step eval does. 15 s give the arm time.
    # (At 10 Hz without the wait, every chunk's row 0 came a tick late, and free-running physics added
    # zero-motion steps between commands: the model then reached 1 of 8 held-out scenes.)
    ticks, rate = 45, 3
    for topic, kind, qos in (("command", Float64MultiArray, "reliable"), ("joint_states", JointState, "sensor"),
                             ("episode", String, "reliable"), ("answer", String, "reliable"),
                             ("/diagnostics", DiagnosticArray, "reliable"), ("success", Bool, "reliable")):
        peer.listen(kind, topic, qos)
    sim = start("ros-sim", ["env.task=uio_robot/Reach-v0", f"env.seed={E2E_SEED}",
                            f"ros.sim_rate_hz={rate}", "ros.sim_lockstep=true"])
    agent = start("ros-agent", [f"loop.max_ticks={ticks}", f"loop.rate_hz={rate}", "loop.replan_every=2",
                                "loop.act_wait_s=0.3", f"policy.period_s={1 / rate}", "policy.threads=1",
                                "ros.stop_on_success=false", f"ros.bag_dir={tmp_path / 'bags'}",
                                "ros.wait_for_data_s=60"])
    peer.wait_for("command", 10, timeout=90)  # both up and the loop running
    query_sent = time.monotonic()
    peer.node.create_publisher(String, "query", 10).publish(
        String(data=json.dumps({"id": "q-42", "question": "what colour is the ball?", "camera": "image"})))
    answers = peer.wait_for("answer", 1, timeout=30)
    episode = json.loads(peer.wait_for("episode", 1, timeout=ticks / rate + 30)[0].data)
    assert sim.proc.poll() is None, sim.log()

    reply = json.loads(answers[0].data)
    assert reply["id"] == "q-42" and reply["question"] == "what colour is the ball?"
    assert reply["error"] is None and isinstance(reply["answer"], str) and reply["answer"], reply
    assert time.monotonic() - query_sent > reply["latency_ms"] / 1e3  # answered while the episode ran
    telemetry = episode["telemetry"]
    assert abs(telemetry["rate_hz"] - rate) < 1.0, telemetry
    assert telemetry["queries"] == 1 and telemetry["sources"].get("chunk", 0) > telemetry["ticks"] * 0.3, (
        telemetry, agent.log()[-3000:])
    # One command per tick reached the robot side: every command published after the peer heard its first
    # one (the bag stamps each at publish time) arrives. Those before may be lost to DDS discovery under load.
    bag = read_bag(episode["bag"])
    first_heard = peer.heard["command"][0][0] + (time.time() - time.monotonic())
    later = [t for topic, _, t, _ in bag if topic == "command" and t / 1e9 > first_heard]
    assert len(later) > telemetry["ticks"] * 0.5, (len(later), telemetry["ticks"])
    commands = peer.wait_for("command", len(later), timeout=5)
    assert any(np.any(np.abs(np.asarray(c.data[:3])) > 1e-6) for c in commands)
    positions = np.array([m.position for m in peer.messages("joint_states")])
    assert np.ptp(positions, axis=0).max() > 1e-3  # the arm moved
    statuses = [s for a in peer.messages("/diagnostics") for s in a.status]
    assert statuses and {kv.key for kv in statuses[0].values} >= {"rate_hz", "jitter_p99_ms", "faults", "estop"}
    # The shipped model reached the object: the sim reported success during the episode.
    sim_success = [m.data for m in peer.messages("success")]
    assert any(sim_success), (episode["success"], len(sim_success))

    topics = {topic for topic, *_ in bag}
    assert {"camera/image_raw", "joint_states", "ee_state", "command", "instruction"} <= topics
    n_commands = sum(topic == "command" for topic, *_ in bag)
    assert abs(n_commands - telemetry["ticks"]) <= 2
    assert agent.wait(timeout=20) == 0, agent.log()


class FakeRobot:
    """The test as the robot: publishes 64x64 images and both JointStates at `rate_hz` until stopped.
    `image`/`joints` may be swapped for bad ones while it runs; `paused` silences the camera."""

    def __init__(self, peer: Peer, rate_hz: float = 30.0):
        node = peer.node
        self.cam = node.create_publisher(Image, "camera/image_raw", 10)
        self.js = node.create_publisher(JointState, "joint_states", 10)
        self.ee = node.create_publisher(JointState, "ee_state", 10)
        self.image = cv.array_to_image(np.full((64, 64, 3), 90, np.uint8))
        self.joints = cv.make_joint_state(JOINTS, np.linspace(0.1, 0.7, 7))
        self.paused = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(1.0 / rate_hz,), daemon=True)
        self._thread.start()

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            if not self.paused:
                self.cam.publish(self.image)
            self.js.publish(self.joints)
            self.ee.publish(cv.make_joint_state(EE, [0.4, 0.0, 0.2, 0.0, 0.08]))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def zero_and_moving(peer: Peer, since: float, until: float) -> tuple[int, int]:
    commands = [np.asarray(m.data) for m in peer.messages("command", since, until)]
    zero = sum(not np.any(c) for c in commands)
    return zero, len(commands) - zero


def phase(peer: Peer, seconds: float = 1.0) -> tuple[int, int]:
    """(zero commands, moving commands) heard in the last half of a phase of `seconds`."""
    time.sleep(seconds / 2)
    t0 = time.monotonic()
    time.sleep(seconds / 2)
    return zero_and_moving(peer, t0, time.monotonic())


def test_bad_inputs_lead_to_the_safe_action_with_the_reason_logged(ros):
    env, start, peer = ros
    peer.listen(Float64MultiArray, "command")
    peer.listen(DiagnosticArray, "/diagnostics")
    agent = start("ros-agent", ["policy.kind=random", "loop.rate_hz=20", "ros.image_height=64", "ros.image_width=64",
                                "safety.max_obs_age_s=0.3", "ros.robot_reset_service=", "ros.success_topic=",
                                "ros.instruction=reach the ball"])
    robot = FakeRobot(peer)
    try:
        peer.wait_for("command", 10, timeout=60)
        good = phase(peer)
        assert good[1] >= 8 and good[0] == 0, good  # random policy: moving commands

        robot.image = Image(height=64, width=64, encoding="16UC1", step=128, data=bytes(64 * 128))
        wrong_encoding = phase(peer)
        robot.image = cv.array_to_image(np.full((32, 32, 3), 90, np.uint8))
        wrong_size = phase(peer)
        robot.image = cv.array_to_image(np.full((64, 64, 3), 90, np.uint8))
        robot.joints = cv.make_joint_state(JOINTS, [0.1, math.nan, 0.3, 0.4, 0.5, 0.6, 0.7])
        nan_joint = phase(peer)
        robot.joints = cv.make_joint_state(JOINTS[:5], np.linspace(0.1, 0.5, 5))
        missing_joint = phase(peer)
        robot.joints = cv.make_joint_state(JOINTS, np.linspace(0.1, 0.7, 7))
        recovered = phase(peer)

        burst_started = time.monotonic()
        for _ in range(300):  # far faster than the 20 Hz loop
            robot.cam.publish(robot.image)
        time.sleep(0.5)
        during_burst = zero_and_moving(peer, burst_started, time.monotonic())
        after_burst = phase(peer)

        robot.paused = True
        silent = phase(peer, 1.4)
        robot.paused = False
        back = phase(peer)
        for name, (zero, moving) in {"wrong encoding": wrong_encoding, "wrong size": wrong_size,
                                     "NaN joint": nan_joint, "missing joint": missing_joint,
                                     "silent camera": silent}.items():
            assert moving == 0 and zero >= 6, (name, zero, moving)
        for name, (zero, moving) in {"recovered": recovered, "after burst": after_burst, "back": back}.items():
            assert moving >= 8, (name, zero, moving)
        assert sum(during_burst) >= 5  # the loop kept ticking through the burst

        assert peer.call(SetBool, "estop", SetBool.Request(data=True)).success
        engaged_at = time.monotonic()
        time.sleep(1.5)
        zero, moving = zero_and_moving(peer, engaged_at + 0.05, time.monotonic())
        assert moving == 0 and zero >= 20, (zero, moving)  # no motion command until the reset
        levels = [s.level for a in peer.messages("/diagnostics", engaged_at + 0.1) for s in a.status]
        assert levels and levels[-1] == DiagnosticStatus.ERROR  # while the e-stop is engaged
        assert peer.call(SetBool, "estop", SetBool.Request(data=False)).success
        assert phase(peer)[1] >= 8  # moving again after the reset
    finally:
        robot.stop()
    assert agent.proc.poll() is None, agent.log()  # the node kept running through all of it
    log = agent.log()
    for reason in ("unsupported encoding '16UC1'", "image is 32x32, expected 64x64",
                   "non-finite position for ['joint2']", "missing joints ['joint6', 'joint7']",
                   "faster than the loop", "camera 'image' silent for", "e-stop engaged"):
        assert reason in log, reason
    assert "stale_observation" in log or "invalid observation" in log


def test_lockstep_sim_steps_once_per_command_like_the_gym_env(ros):
    env, start, peer = ros
    peer.listen(JointState, "ee_state", "sensor")
    start("ros-sim", ["env.task=uio_robot/Reach-v0", "env.image_size=32", "env.seed=5", "ros.sim_rate_hz=20",
                      "ros.sim_lockstep=true"])
    first = peer.wait_for("ee_state", 10, timeout=60)  # republished while no command arrives
    assert len({tuple(m.position) for m in first}) == 1
    assert peer.call(Trigger, "sim/reset", Trigger.Request()).success  # as the agent does: seed 5 again
    cmd = peer.node.create_publisher(Float64MultiArray, "command", 10)
    actions = [np.array([0.01, -0.005 * (i % 3), 0.004, 0.02, 1.0 if i > 3 else -1.0]) for i in range(8)]
    for action in actions:
        cmd.publish(cv.float64_array(action, ["dx", "dy", "dz", "dyaw", "gripper"]))
        time.sleep(0.15)
    time.sleep(0.5)  # idle: republished, not stepped
    settled = time.monotonic()
    time.sleep(0.5)
    after = peer.messages("ee_state", settled)
    assert len(after) >= 5 and len({tuple(m.position) for m in after}) == 1
    # The same actions in the gym env, one step each, end in the same place.
    gym_env = gymnasium.make("uio_robot/Reach-v0", image_size=32).unwrapped
    gym_env.reset(seed=5)
    for action in actions:
        obs = gym_env.step(action.astype(np.float32))[0]
    values = dict(zip(after[-1].name, after[-1].position))
    np.testing.assert_allclose([values[n] for n in EE], obs["state"][:5], atol=1e-6)


def test_sim_executes_twist_commands_with_the_gripper_on_the_extra_topic(ros):
    env, start, peer = ros
    twist = ["ros.command_type=twist", "ros.command_names=[linear.x,linear.y,linear.z,angular.z,gripper]",
             "ros.command_scale=[20.0,20.0,20.0,20.0,1.0]"]
    peer.listen(JointState, "ee_state", "sensor")
    start("ros-sim", ["env.task=uio_robot/Reach-v0", "env.image_size=32", "env.seed=7", *twist])
    peer.wait_for("ee_state", 5, timeout=60)
    cmd = peer.node.create_publisher(TwistStamped, "command", 10)
    extra = peer.node.create_publisher(Float64MultiArray, "command_extra", 10)
    time.sleep(0.5)
    x0 = peer.messages("ee_state")[-1].position[0]
    t0 = time.monotonic()
    for _ in range(20):  # +1 cm per 20 Hz step in x for one second, gripper closing
        cmd.publish(cv.twist(np.array([0.2, 0, 0, 0, 1.0]), ["linear.x", "linear.y", "linear.z", "angular.z",
                                                             "gripper"], cv.to_time(0), "base_link"))
        extra.publish(cv.float64_array(np.array([1.0]), ["gripper"]))
        time.sleep(0.05)
    time.sleep(0.5)
    last = peer.messages("ee_state", t0)[-1]
    values = dict(zip(last.name, last.position))
    assert values["grip_x"] - x0 > 0.08, (x0, values)  # moved about 20 x 1 cm forward
    assert values["gripper_opening"] < 0.03, values  # closed by the extra topic's gripper command
    # The first reset restarts the start-up scene (seed 7, the one an agent resetting at its start runs);
    # each later one takes the next seed. The reply carries the episode's instruction.
    scenes = gymnasium.make("uio_robot/Reach-v0", image_size=32).unwrapped
    instructions = [scenes.reset(seed=seed)[0]["instruction"] for seed in (7, 8, 9)]
    assert len(set(instructions)) == 3, instructions
    replies = [peer.call(Trigger, "sim/reset", Trigger.Request()) for _ in range(3)]
    assert all(r.success for r in replies) and [r.message for r in replies] == instructions


def test_joint_trajectory_commands_and_the_empty_trajectory_as_stop(ros):
    env, start, peer = ros
    peer.listen(JointTrajectory, "command")
    names = ["arm_x", "arm_y", "arm_z", "wrist", "grip"]
    start("ros-agent", ["policy.kind=random", "ros.command_type=joint_trajectory",
                        f"ros.command_names=[{','.join(names)}]", "ros.command_map=[0,1,2,3,4]",
                        "ros.robot_reset_service=", "ros.success_topic=", "ros.instruction=reach the ball",
                        "--ros-args", "-p", "loop.rate_hz:=10.0"])
    robot = FakeRobot(peer)
    try:
        moving = peer.wait_for("command", 10, timeout=60)
        point = moving[-1].points[0]
        assert moving[-1].joint_names == names and len(point.positions) == 5
        assert cv.to_seconds(point.time_from_start) == pytest.approx(0.1)  # one period at the ROS-param rate
        assert all(-0.05 <= p <= 0.05 for p in point.positions[:3])
        assert peer.call(SetBool, "estop", SetBool.Request(data=True)).success
        t0 = time.monotonic()
        time.sleep(0.8)
        stopped = peer.messages("command", t0 + 0.05)
        assert len(stopped) >= 5 and all(not m.points for m in stopped)  # empty trajectory = stop
    finally:
        robot.stop()


def test_state_names_cover_the_sim_state():
    assert tuple(EE + JOINTS) == STATE_NAMES


def test_agent_with_the_process_worker_plays_two_episodes_and_answers(ros, tmp_path):
    """`loop.worker=process`: the node hands the loop a recipe, the model is built in a spawned child,
    and the episodes and a query run through it."""
    from tiny_policy import make_tiny_checkpoint

    env, start, peer = ros
    for topic, kind in (("episode", String), ("answer", String), ("command", Float64MultiArray)):
        peer.listen(kind, topic)
    start("ros-sim", ["env.task=uio_robot/Reach-v0", "env.image_size=64", "env.seed=3"])
    agent = start("ros-agent", [f"policy.checkpoint={make_tiny_checkpoint(tmp_path / 'tiny', chunk=6)}",
                                "policy.threads=1", "loop.worker=process", "loop.max_ticks=40", "ros.episodes=2",
                                "ros.stop_on_success=false", "ros.wait_for_data_s=60"])
    peer.wait_for("command", 5, timeout=90)
    question = {"id": "p", "question": "what colour is the ball?"}
    peer.node.create_publisher(String, "query", 10).publish(String(data=json.dumps(question)))
    reply = json.loads(peer.wait_for("answer", 1, timeout=30)[0].data)
    assert reply["id"] == "p" and reply["error"] is None and reply["answer"], reply
    episodes = [json.loads(m.data) for m in peer.wait_for("episode", 2, timeout=60)]
    assert [e["episode"] for e in episodes] == [0, 1]
    for e in episodes:
        assert e["telemetry"]["sources"].get("chunk", 0) > e["telemetry"]["ticks"] * 0.5, e["telemetry"]
        assert "worker_dead" not in e["telemetry"]["faults"], e["telemetry"]
    assert agent.wait(timeout=20) == 0, agent.log()
