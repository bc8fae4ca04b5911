"""`RosRobot`: a `Robot` whose observations come from ROS 2 topics and whose commands go out on one.

Callbacks (on the node's executor thread) convert each message at once and keep only the newest per
topic, so a burst faster than the control loop costs nothing downstream. A message that cannot be used
(wrong encoding or size, NaN, missing joints) is logged with its reason and makes `observe()` raise
`InvalidObservation` until a good message replaces it: the loop then sends the safe action. A silent
topic keeps its old receive time, so the loop's staleness watchdog sends the safe action; the silent
topic is named in the log. The observation's timestamp is the oldest receive time among its parts.

QoS: cameras and joint states use the sensor-data profile (best effort: a late frame is worthless, and a
best-effort subscriber also hears reliable publishers); commands, success and the instruction are
reliable (the instruction also transient-local, so a late-starting agent still gets it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from uio_robot.agent.config import RosConfig
from uio_robot.agent.protocols import ArraySpec, InvalidObservation, Observation
from uio_robot.agent.tracking import Increments

from . import conversions as cv

Recorder = Callable[[str, object], None]  # (topic, message) of everything received or sent


def reliable(depth: int) -> QoSProfile:
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)


def latched() -> QoSProfile:
    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class Throttled:
    """Log a message at most once per `period_s` per key (a bad topic at 30 Hz must not flood the log)."""

    def __init__(self, logger, period_s: float = 2.0):
        self.logger, self.period_s = logger, period_s
        self._last: dict[str, float] = {}

    def warn(self, key: str, text: str) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.period_s:
            self._last[key] = now
            self.logger.warning(text)


class RosRobot:
    """See the module docstring. `estop_engaged` tells `act` to send the stop command whatever it is given."""

    def __init__(self, node: Node, cfg: RosConfig, period_s: float, max_obs_age_s: float = 0.5,
                 estop_engaged: Callable[[], bool] = lambda: False, track_chunks: bool = True):
        self.node, self.cfg, self.period_s, self.max_obs_age_s = node, cfg, period_s, max_obs_age_s
        self.estop_engaged = estop_engaged
        self.action_spec, self.state_spec = self.specs(cfg)
        self.increments = Increments.from_names(cfg.increments, self.action_spec, self.state_spec,
                                                tuple(cfg.angle_states)) if track_chunks else None
        zero_ok = np.all(self.action_spec.low <= 0) and np.all(self.action_spec.high >= 0)
        self.safe_action = np.zeros(self.action_spec.dim, np.float32) if zero_ok else None
        self.mapping = cv.CommandMapping.create(cfg.command_names, self.action_spec.dim, cfg.command_map,
                                                cfg.command_scale)
        self.extra_names = ([n for n in cfg.command_names if n not in cv.TWIST_FIELDS]
                            if cfg.command_type == "twist" else [])
        self.recorder: Recorder | None = None
        self.log = Throttled(node.get_logger())
        self._lock = threading.Lock()
        self._parts: dict[str, tuple[object, float]] = {}  # source -> (converted value, receive time)
        self._problems: dict[str, str] = {}  # source -> why its newest message was rejected
        self._unseen: dict[str, int] = {}  # source -> messages received since the last observe()
        self._instruction = cfg.instruction
        self._success = False
        self.received = dict.fromkeys(self._sources(), 0)
        self.rejected = dict.fromkeys(self._sources(), 0)
        self.last_image_received = float("nan")  # for the overhead benchmark: newest frame's arrival
        self.convert_s: list[float] = []  # per camera message: conversion time
        self._subscribe()
        self._publish_cmd, self._publish_extra = self._make_publishers()
        self._reset_client = (node.create_client(Trigger, cfg.robot_reset_service)
                              if cfg.robot_reset_service else None)

    @staticmethod
    def specs(cfg: RosConfig) -> tuple[ArraySpec, ArraySpec]:
        """(action spec, state spec) of the robot this config describes."""
        action = ArraySpec(tuple(cfg.action_names), np.asarray(cfg.action_low), np.asarray(cfg.action_high))
        n_state = len(cfg.state_names)
        return action, ArraySpec(tuple(cfg.state_names), np.full(n_state, -np.inf), np.full(n_state, np.inf))

    # ---- wiring ----------------------------------------------------------------------------------------
    def _sources(self) -> list[str]:
        return [f"camera {name!r}" for name in self.cfg.cameras] + [f"topic {t!r}" for t in self.cfg.state_topics]

    def _subscribe(self) -> None:
        cfg, node = self.cfg, self.node
        size = (cfg.image_height, cfg.image_width) if cfg.image_height or cfg.image_width else None
        for name, topic in cfg.cameras.items():
            compressed = name in cfg.compressed
            node.create_subscription(CompressedImage if compressed else Image, topic,
                                     self._image_callback(name, topic, compressed, size), qos_profile_sensor_data)
        for topic, names in cfg.state_topics.items():
            node.create_subscription(JointState, topic, self._state_callback(topic, list(names)),
                                     qos_profile_sensor_data)
        node.create_subscription(String, cfg.instruction_topic, self._on_instruction, latched())
        if cfg.success_topic:
            node.create_subscription(Bool, cfg.success_topic, self._on_success, reliable(cfg.qos_depth))

    def _make_publishers(self):
        cfg, qos = self.cfg, reliable(self.cfg.qos_depth)
        kind = {"float64_array": Float64MultiArray, "twist": TwistStamped, "joint_trajectory": JointTrajectory}
        cmd = self.node.create_publisher(kind[cfg.command_type], cfg.command_topic, qos)
        extra = (self.node.create_publisher(Float64MultiArray, cfg.command_topic + "_extra", qos)
                 if self.extra_names else None)
        return cmd, extra

    # ---- callbacks (executor thread) -------------------------------------------------------------------
    def _store(self, source: str, topic: str, msg, convert: Callable[[], object]) -> None:
        now = time.monotonic()
        if self.recorder is not None:
            self.recorder(topic, msg)
        try:
            value = convert()
        except cv.BadMessage as exc:
            with self._lock:
                self.rejected[source] += 1
                self._problems[source] = str(exc)
            self.log.warn(f"bad:{source}", f"rejected a message on {source}: {exc}; sending the safe action")
            return
        with self._lock:
            self.received[source] += 1
            self._parts[source] = (value, now)
            self._problems.pop(source, None)
            self._unseen[source] = self._unseen.get(source, 0) + 1

    def _image_callback(self, name: str, topic: str, compressed: bool, size):
        source = f"camera {name!r}"

        def callback(msg) -> None:
            started = time.perf_counter()
            self._store(source, topic, msg, (lambda: cv.compressed_to_array(msg, size, what=source)) if compressed
                        else (lambda: cv.image_to_array(msg, size, what=source)))
            self.convert_s.append(time.perf_counter() - started)
            self.last_image_received = time.monotonic()
        return callback

    def _state_callback(self, topic: str, names: list[str]):
        source = f"topic {topic!r}"
        return lambda msg: self._store(source, topic, msg, lambda: cv.joint_state_values(msg, names, what=source))

    def _on_instruction(self, msg: String) -> None:
        if self.recorder is not None:
            self.recorder(self.cfg.instruction_topic, msg)
        with self._lock:
            self._instruction = msg.data

    def _on_success(self, msg: Bool) -> None:
        with self._lock:
            self._success = bool(msg.data)

    # ---- Robot protocol (control loop thread) ----------------------------------------------------------
    def observe(self) -> Observation:
        with self._lock:
            problems = dict(self._problems)
            parts = dict(self._parts)
            unseen, self._unseen = self._unseen, {}
            instruction = self._instruction
        if problems:
            raise InvalidObservation("; ".join(problems.values()))
        missing = [s for s in self._sources() if s not in parts]
        if missing:
            raise InvalidObservation(f"no message yet on {missing}")
        if not instruction.strip():  # a latched instruction may arrive after the first camera frames
            raise InvalidObservation(f"no instruction yet: publish one on {self.cfg.instruction_topic!r} "
                                     "or set ros.instruction")
        now = time.monotonic()
        for source, (_, received) in parts.items():
            if now - received > self.max_obs_age_s:
                self.log.warn(f"silent:{source}", f"{source} silent for {now - received:.2f} s "
                                                  f"(> {self.max_obs_age_s} s): stale observation, safe action")
        for source, count in unseen.items():
            if count > 2:  # one extra is ordinary jitter between two equal rates
                self.log.warn(f"burst:{source}", f"{source}: {count} messages arrived between two ticks "
                                                 "(faster than the loop); only the newest is used")
        images = {name: parts[f"camera {name!r}"][0] for name in self.cfg.cameras}
        values: dict[str, float] = {}
        for topic in self.cfg.state_topics:
            values.update(parts[f"topic {topic!r}"][0])
        state = np.array([values[n] for n in self.cfg.state_names], np.float32)
        timestamp = min(received for _, received in parts.values())
        return Observation(images, state, instruction, timestamp)

    def act(self, action: np.ndarray) -> None:
        if self.estop_engaged():
            self.publish_stop()
            return
        values = self.mapping.to_values(action)
        self._publish(values)

    def publish_stop(self) -> None:
        """The command that means "stop": zero velocity/delta, or an empty trajectory (cancels the current one)."""
        if self.cfg.command_type == "joint_trajectory":
            msg = JointTrajectory(joint_names=list(self.mapping.names))
            msg.header.stamp = self.node.get_clock().now().to_msg()
            self._send(self._publish_cmd, self.cfg.command_topic, msg)
            return
        self._publish(np.zeros(len(self.mapping.names)))

    def _publish(self, values: np.ndarray) -> None:
        cfg, names = self.cfg, self.mapping.names
        if cfg.command_type == "float64_array":
            msg = cv.float64_array(values, names)
        else:
            stamp = self.node.get_clock().now().to_msg()
            msg = (cv.twist(values, names, stamp, cfg.frame_id) if cfg.command_type == "twist"
                   else cv.joint_trajectory(values, names, stamp, self.period_s))
        self._send(self._publish_cmd, cfg.command_topic, msg)
        if self._publish_extra is not None:
            extra = [v for n, v in zip(names, values) if n in self.extra_names]
            self._send(self._publish_extra, cfg.command_topic + "_extra", cv.float64_array(np.asarray(extra),
                                                                                          self.extra_names))

    def _send(self, publisher, topic: str, msg) -> None:
        publisher.publish(msg)
        if self.recorder is not None:
            self.recorder(topic, msg)

    def reset(self, seed: int | None = None) -> Observation:
        """Ask the robot side to reset (if it offers the service), then wait for a complete fresh observation."""
        if self._reset_client is not None:
            self._call_reset()
        with self._lock:
            self._parts.clear()
            self._problems.clear()
            self._success = False
        return self.wait_for_observation(self.cfg.wait_for_data_s)

    def _call_reset(self) -> None:
        service = self.cfg.robot_reset_service
        if not self._reset_client.wait_for_service(timeout_sec=self.cfg.wait_for_data_s):
            raise TimeoutError(f"robot reset service {service!r} not available after {self.cfg.wait_for_data_s} s")
        future = self._reset_client.call_async(Trigger.Request())
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        if not done.wait(self.cfg.wait_for_data_s):
            raise TimeoutError(f"robot reset service {service!r} did not answer")
        if not future.result().success:
            raise RuntimeError(f"robot reset service {service!r} failed: {future.result().message}")

    def wait_for_observation(self, timeout_s: float) -> Observation:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.observe()
            except InvalidObservation as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no usable observation after {timeout_s} s: {exc}") from None
            time.sleep(0.01)

    def is_done(self) -> bool:
        return self.cfg.stop_on_success and self.is_success()

    def is_success(self) -> bool:
        with self._lock:
            return self._success

    def close(self) -> None:
        pass
