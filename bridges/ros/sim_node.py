"""`uio-robot ros-sim`: the MuJoCo tabletop suite as a ROS 2 robot (for tests, demos, and trying a setup).

    uio-robot ros-sim [env.task=uio_robot/Reach-v0 env.image_size=128 env.seed=0 ros.sim_rate_hz=20 ...]
                      [--ros-args ...]

It runs the physics at `ros.sim_rate_hz` (one env step per timer tick) with the newest command it
received (each command is executed once; with none new it holds: zero motion, gripper unchanged), and
after each step publishes what a real robot driver would: camera images (every `ros.camera_every`
steps; `ros.compressed` cameras as JPEG), the JointState topics of `ros.state_topics` (values by name
from the env's state: the 7 arm joints on joint_states, the grip point pose and opening on ee_state),
`success` (std_msgs/Bool) and, on each reset, the instruction (transient local). It reads the command
type and mapping from the same `ros.*` config as the agent, so the two always agree.

With `ros.sim_lockstep=true` it instead takes one env step per command it receives, right away, and none
otherwise, and republishes its last observation (fresh stamps) at `ros.sim_rate_hz` so that subscribers
that join late still get one. A gripper value on `command_extra` (twist commands) is taken with the next
command's step. Why: a policy trained and evaluated in lock step (one env step per
action) sees the same dynamics over ROS. The free-running mode's zero-motion steps between commands
stop the arm where it is; the shipped model, which never saw such steps, reached 4 of 20 held-out Reach
scenes with one after each command, against 17 of 20 without.

It starts up showing the scene of seed `env.seed`. Service `sim/reset` (std_srvs/Trigger) starts an
episode: the first call re-creates that start-up scene, so an agent that resets the robot at its
episode start (as `ros-agent` does) runs seed `env.seed`; each later call takes the next seed.
"""

from __future__ import annotations

import signal
import sys
import threading

import numpy as np
from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from uio_robot.agent.config import AppConfig, ConfigError

from . import conversions as cv
from .node_main import run_node
from .params import declare_config
from .ros_robot import Throttled, latched, reliable

ENV_IMAGE_KEYS = ("image", "wrist_image")


class SimRobotNode:
    """One tabletop env behind ROS 2 topics; see the module docstring."""

    def __init__(self, node: Node, cfg: AppConfig):
        import gymnasium

        import uio_robot.envs  # noqa: F401  (registers the suite)
        from uio_robot.envs import ACTION_NAMES

        self.node, self.cfg, r = node, cfg, cfg.ros
        unknown = sorted(set(r.cameras) - set(ENV_IMAGE_KEYS))
        if unknown:
            raise ConfigError(f"config ros.cameras: the sim has cameras {ENV_IMAGE_KEYS}, not {unknown}")
        if list(r.action_names) != list(ACTION_NAMES):
            raise ConfigError(f"config ros.action_names={r.action_names}: the sim's actions are {list(ACTION_NAMES)}")
        self.env = gymnasium.make(cfg.env.task, image_size=cfg.env.image_size,
                                  images=tuple(r.cameras)).unwrapped
        self.mapping = cv.CommandMapping.create(r.command_names, len(ACTION_NAMES), r.command_map, r.command_scale)
        self.log = Throttled(node.get_logger())
        self._lock = threading.Lock()
        self._command: dict[str, float] | None = None  # newest, not yet executed
        self._gripper = -1.0  # the last gripper command (held while no command arrives)
        self.steps = self.executed = 0
        self.seed = cfg.env.seed  # the scene on show
        self._resets = 0  # sim/reset calls so far
        qos = reliable(r.qos_depth)
        self.cameras = {name: node.create_publisher(CompressedImage if name in r.compressed else Image, topic,
                                                    qos_profile_sensor_data) for name, topic in r.cameras.items()}
        self.states = {topic: node.create_publisher(JointState, topic, qos_profile_sensor_data)
                       for topic in r.state_topics}
        self.success = node.create_publisher(Bool, r.success_topic or "success", qos)
        self.instruction = node.create_publisher(String, r.instruction_topic, latched())
        kind = {"float64_array": Float64MultiArray, "twist": TwistStamped, "joint_trajectory": JointTrajectory}
        node.create_subscription(kind[r.command_type], r.command_topic, self._on_command, qos)
        if r.command_type == "twist":
            node.create_subscription(Float64MultiArray, r.command_topic + "_extra", self._on_extra, qos)
        node.create_service(Trigger, r.robot_reset_service or "sim/reset", self._on_reset)
        self._last: tuple[dict, bool] | None = None  # the newest observation and success flag
        self._reset()
        node.create_timer(1.0 / r.sim_rate_hz, self._republish if r.sim_lockstep else self._step)

    # ---- commands ------------------------------------------------------------------------------------
    def _on_command(self, msg) -> None:
        names, kind = self.mapping.names, self.cfg.ros.command_type
        try:
            if kind == "float64_array":
                values = cv.values_from_float64_array(msg, names)
            elif kind == "twist":
                values = cv.values_from_twist(msg, names)
            else:
                values = cv.values_from_joint_trajectory(msg, names)
        except cv.BadMessage as exc:
            self.log.warn("bad-command", f"ignored a command: {exc}")
            return
        with self._lock:
            if values is None:  # an empty trajectory: stop
                self._command = {}
            else:
                self._command = {**(self._command or {}), **values}
        if self.cfg.ros.sim_lockstep:
            self._step()

    def _on_extra(self, msg: Float64MultiArray) -> None:
        extra = [n for n in self.mapping.names if n not in cv.TWIST_FIELDS]
        try:
            values = cv.values_from_float64_array(msg, extra, what="command_extra")
        except cv.BadMessage as exc:
            self.log.warn("bad-extra", f"ignored a command: {exc}")
            return
        with self._lock:
            self._command = {**(self._command or {}), **values}

    # ---- simulation ----------------------------------------------------------------------------------
    def _hold(self) -> np.ndarray:
        action = np.zeros(self.mapping.action_dim, np.float32)
        action[-1] = self._gripper  # the suite's last action dim is the gripper
        return action

    def _step(self) -> None:
        with self._lock:
            command, self._command = self._command, None
        action = self._hold() if not command else self.mapping.to_action(command, self._hold())
        self._gripper = float(action[-1])
        self.executed += command is not None
        obs, _, _, _, info = self.env.step(action)
        self.steps += 1
        self._publish(obs, bool(info.get("is_success", False)))

    def _republish(self) -> None:
        if self._last is not None:
            self._publish(*self._last)

    def _publish(self, obs: dict, success: bool) -> None:
        self._last = (obs, success)
        stamp = self.node.get_clock().now().to_msg()
        if self.steps % self.cfg.ros.camera_every == 0:
            for name, publisher in self.cameras.items():
                image = obs[name]
                msg = (cv.array_to_compressed(image, stamp, name) if name in self.cfg.ros.compressed
                       else cv.array_to_image(image, stamp, name))
                publisher.publish(msg)
        values = dict(zip(self.state_names, obs["state"].tolist()))
        for topic, names in self.cfg.ros.state_topics.items():
            self.states[topic].publish(cv.make_joint_state(names, [values[n] for n in names], stamp))
        self.success.publish(Bool(data=success))

    @property
    def state_names(self) -> tuple[str, ...]:
        from uio_robot.envs import STATE_NAMES

        return STATE_NAMES

    def _reset(self) -> None:
        obs, _ = self.env.reset(seed=self.seed)
        self.node.get_logger().info(f"episode with seed {self.seed}: {obs['instruction']}")
        with self._lock:
            self._command, self._gripper = None, -1.0
        self.instruction.publish(String(data=obs["instruction"]))
        self._publish(obs, False)

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.seed += self._resets > 0  # the first call restarts the start-up scene
        self._resets += 1
        self._reset()
        response.success, response.message = True, self.env.episode.instruction
        return response


def main(argv: list[str]) -> int:
    return run_node("ros-sim", __doc__, argv, _serve, defaults=("ros.node_name=uio_robot_sim",))


def _serve(node: Node, executor, cfg: AppConfig) -> int:
    """Run the simulated robot on `node` until SIGINT/SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        cfg = declare_config(node, cfg, sections=("env", "ros"))
        sim = SimRobotNode(node, cfg)
        executor.add_node(node)
        node.get_logger().info(f"sim robot ready: {cfg.env.task} at {cfg.ros.sim_rate_hz} Hz")
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
        node.get_logger().info(f"sim robot stops after {sim.steps} steps ({sim.executed} commands executed)")
        return 0
    except ConfigError as exc:
        print(f"uio-robot ros-sim: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
