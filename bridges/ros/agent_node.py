"""`uio-robot ros-agent`: the agent as a ROS 2 node, driven by the same `ControlLoop` as the simulations.

    uio-robot ros-agent [hydra overrides, e.g. policy.checkpoint=DIR loop.rate_hz=20 ros.episodes=0]
                        [--ros-args -p loop.rate_hz:=10 -r camera/image_raw:=/cam/color/image_raw ...]

Configuration: the Hydra config is the source of the node's ROS parameters (`loop.*`, `safety.*`,
`policy.*`, `env.*`, `ros.*`); `-p name:=value` overrides a value, and the result is validated at start.

Interface (names relative to the node's namespace; remap with `-r old:=new`):
  subscribes  <ros.cameras values>    sensor_msgs/Image or CompressedImage (sensor-data QoS)
              <ros.state_topics keys> sensor_msgs/JointState; the state vector is ros.state_names by name
              instruction             std_msgs/String (transient local); ros.instruction until one arrives
              success                 std_msgs/Bool from the robot; ends the episode (ros.stop_on_success)
              query                   std_msgs/String: JSON {"id": "q1", "question": "...", "camera": "image"}
                                      ("camera" optional: default all cameras; plain text = a question, id "")
  publishes   command                 Float64MultiArray | TwistStamped | JointTrajectory (reliable);
                                      twist mode: slots that are no twist field go on command_extra
              answer                  std_msgs/String: JSON {"id", "question", "answer", "error", "latency_ms"}
              episode                 std_msgs/String: JSON {"episode", "success", "telemetry", "bag"} per episode
              /diagnostics            diagnostic_msgs/DiagnosticArray: the loop's telemetry over the last period
  services    estop                   std_srvs/SetBool: true engages the e-stop latch, false releases it. While
                                      engaged every command is the stop command (zeros / empty trajectory).
              reset_episode           std_srvs/Trigger: end the episode now and start the next one
  calls       sim/reset               std_srvs/Trigger on the robot side at each episode start (ros.robot_reset_service)

With `ros.bag_dir=DIR` each episode's inputs and commands are recorded to DIR/episode_NNNNNN (rosbag2, mcap).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from uio_robot.agent.config import AppConfig, ConfigError, RosConfig
from uio_robot.agent.loop import ControlLoop
from uio_robot.agent.policy_recipe import PolicyRecipe, describe_policy, policy_recipe_from_config
from uio_robot.agent.protocols import ArraySpec, Observation, Policy
from uio_robot.agent.telemetry import Telemetry

from .bag import BagRecorder
from .node_main import run_node
from .params import declare_config
from .ros_robot import RosRobot, reliable

log = logging.getLogger("uio_robot.ros_agent")


class AgentNode:
    """The node's parts around one `ControlLoop`; `run()` plays the configured number of episodes."""

    def __init__(self, node: Node, cfg: AppConfig, policy):
        self.node, self.cfg, self.policy = node, cfg, policy
        period = 1.0 / cfg.loop.rate_hz
        self.robot = RosRobot(node, cfg.ros, period, cfg.safety.max_obs_age_s,
                              estop_engaged=lambda: self.loop.safety.estop.engaged,
                              track_chunks=cfg.loop.track_chunks)
        self.loop = ControlLoop(self.robot, policy, cfg.loop, cfg.safety)
        qos = reliable(cfg.ros.qos_depth)
        self.answers = node.create_publisher(String, "answer", qos)
        self.episodes = node.create_publisher(String, "episode", qos)
        self.diagnostics = node.create_publisher(DiagnosticArray, "/diagnostics", qos)
        node.create_subscription(String, "query", self._on_query, qos)
        node.create_service(SetBool, "estop", self._on_estop)
        node.create_service(Trigger, "reset_episode", self._on_reset_episode)
        node.create_timer(cfg.ros.diagnostics_period_s, self.publish_diagnostics)
        self.episode_index = 0
        self.shutdown = threading.Event()

    # ---- operation -------------------------------------------------------------------------------------
    def _on_estop(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if request.data:
            self.loop.estop("ROS service estop")
            self.robot.publish_stop()
            response.message = "e-stop engaged: stop commands only until released"
        else:
            self.loop.reset_estop()
            response.message = "e-stop released"
        self.node.get_logger().warning(response.message)
        response.success = True
        return response

    def _on_reset_episode(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.node.get_logger().info(f"episode reset requested during episode {self.episode_index}")
        self.loop.request_stop()
        response.success, response.message = True, f"episode {self.episode_index} ends; the next one starts"
        return response

    def _on_query(self, msg: String) -> None:
        started = time.monotonic()
        try:
            request = json.loads(msg.data)
            if not isinstance(request, dict):
                raise ValueError
        except ValueError:
            request = {"id": "", "question": msg.data}
        qid, question = str(request.get("id", "")), str(request.get("question", ""))
        try:
            obs = self.robot.observe()
            camera = request.get("camera")
            if camera is not None and camera not in obs.images:
                raise KeyError(f"unknown camera {camera!r}; cameras: {sorted(obs.images)}")
            images = obs.images if camera is None else {camera: obs.images[camera]}
            future = self.loop.query(images, question)
        except Exception as exc:
            self._answer(qid, question, None, f"{type(exc).__name__}: {exc}", started)
            return

        def done(f) -> None:
            error = f.exception()
            if error is not None:
                self._answer(qid, question, None, f"{type(error).__name__}: {error}", started)
            else:
                self._answer(qid, question, f.result().text, None, started)
        future.add_done_callback(done)

    def _answer(self, qid: str, question: str, answer: str | None, error: str | None, started: float) -> None:
        payload = {"id": qid, "question": question, "answer": answer, "error": error,
                   "latency_ms": round((time.monotonic() - started) * 1e3, 2)}
        self.answers.publish(String(data=json.dumps(payload)))

    def publish_diagnostics(self) -> None:
        """The loop's telemetry over the last diagnostics period (rate, jitter, latency, faults, e-stop)."""
        window = self.cfg.ros.diagnostics_period_s
        now = time.monotonic()
        recent = [r for r in list(self.loop.telemetry.ticks)[-int(4 * window * self.cfg.loop.rate_hz + 8):]
                  if r.started >= now - window]
        telemetry = Telemetry(self.cfg.loop.rate_hz)
        telemetry.ticks = recent
        s = telemetry.summary()
        estop = self.loop.safety.estop
        level = (DiagnosticStatus.ERROR if estop.engaged else
                 DiagnosticStatus.WARN if s["faults"] or s["interventions"] or not recent else DiagnosticStatus.OK)
        message = (f"e-stop engaged ({estop.reason})" if estop.engaged else
                   "no control ticks" if not recent else f"{s['rate_hz'] or 0:.1f} Hz")
        values = {
            "episode": self.episode_index, "ticks_in_window": s["ticks"], "rate_hz": s["rate_hz"],
            "target_rate_hz": self.cfg.loop.rate_hz, "jitter_p99_ms": s["jitter_ms"]["p99"],
            "tick_work_p99_ms": s["tick_work_ms"]["p99"], "inference_latency_p50_ms": s["latency_ms"]["p50"],
            "observation_age_p50_ms": s["obs_age_ms"]["p50"], "overruns": s["overruns"],
            "faults": json.dumps(s["faults"]), "interventions": json.dumps(s["interventions"]),
            "sources": json.dumps(s["sources"]), "estop": estop.engaged,
            "received": json.dumps(self.robot.received), "rejected": json.dumps(self.robot.rejected),
        }
        status = DiagnosticStatus(level=level, name=f"{self.node.get_name()}: control loop",
                                  hardware_id=self.node.get_fully_qualified_name(), message=message,
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.node.get_clock().now().to_msg()
        self.diagnostics.publish(array)

    # ---- episodes --------------------------------------------------------------------------------------
    def run(self) -> int:
        cfg = self.cfg.ros
        self.node.get_logger().info("waiting for the robot's topics")
        first = self.robot.wait_for_observation(cfg.wait_for_data_s)
        # A built policy (thread worker) is ours to warm up; a recipe was warmed up where the process worker
        # built it. Either worker resets the policy at each episode start (loop.reset_policy).
        if not isinstance(self.policy, PolicyRecipe):
            self.policy.act(first)  # warm-up, outside the timing
        while not self.shutdown.is_set() and (cfg.episodes == 0 or self.episode_index < cfg.episodes):
            bag = None
            if cfg.bag_dir:
                bag = BagRecorder(Path(cfg.bag_dir) / f"episode_{self.episode_index:06d}")
                self.robot.recorder = lambda topic, msg, bag=bag: bag.write(topic, msg, time.time_ns())
            self.loop.reset_policy()
            try:
                summary = self.loop.run(seed=self.cfg.env.seed + self.episode_index)
            except BaseException:
                self.robot.recorder = None
                if bag is not None:
                    bag.abort()
                raise
            self.robot.recorder = None
            bag_path = str(bag.close()) if bag is not None else None
            result = {"episode": self.episode_index, "success": self.robot.is_success(), "telemetry": summary,
                      "bag": bag_path}
            self.episodes.publish(String(data=json.dumps(result)))
            self.node.get_logger().info(f"episode {self.episode_index} done: success={result['success']} "
                                        f"rate={summary['rate_hz']} Hz ticks={summary['ticks']}")
            self.episode_index += 1
        return 0

    def stop(self) -> None:
        self.shutdown.set()
        self.loop.request_stop()


def build_policy_for(cfg: AppConfig, action_spec: ArraySpec, state_spec: ArraySpec) -> Policy | PolicyRecipe:
    """The configured policy (the shipped default model unless policy.* says otherwise), as the loop's
    worker needs it: built here for `loop.worker=thread`; for `process` the recipe, which the child
    builds and warms up on a blank observation (no topic has arrived yet when it starts). With
    ros.pace=auto a model is timed on that observation first and the loop slowed where it needs to be."""
    from uio_robot.agent.pace import fit_pace
    from uio_robot.agent.rollout import fit_replanning

    chunk = describe_policy(cfg.policy).chunk
    if cfg.ros.pace == "auto" and cfg.policy.kind == "uio2":
        policy, line = fit_pace(cfg, action_spec, state_spec, blank_observation(cfg.ros, state_spec), chunk)
        log.info("%s (ros.pace=real: loop.* as given)", line)
        return policy
    recipe = policy_recipe_from_config(cfg, action_spec, state_spec)
    fit_replanning(cfg, chunk)
    if cfg.loop.worker == "process":
        return recipe.warmed(blank_observation(cfg.ros, state_spec))
    return recipe.build()


def blank_observation(ros: RosConfig, state_spec: ArraySpec) -> Observation:
    """Grey frames from every configured camera (at the expected size, else 64x64), a zero state and the
    default instruction: enough for a policy's first call, which is what a warm-up needs."""
    size = (ros.image_height or 64, ros.image_width or 64, 3)
    return Observation({name: np.full(size, 128, np.uint8) for name in ros.cameras},
                       np.zeros(state_spec.dim, np.float32), ros.instruction or "warm up", 0.0)


def main(argv: list[str]) -> int:
    return run_node("ros-agent", __doc__, argv, _serve)


def _serve(node: Node, executor, cfg: AppConfig) -> int:
    """Build the policy and the agent on `node`, spin the executor in a thread, run the episodes."""
    spinning = threading.Event()
    spinning.set()

    def spin() -> None:
        while spinning.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, name="ros-executor", daemon=True)
    agent = None
    try:
        cfg = declare_config(node, cfg)
        action_spec, state_spec = RosRobot.specs(cfg.ros)
        policy = build_policy_for(cfg, action_spec, state_spec)
        agent = AgentNode(node, cfg, policy)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: agent.stop())
        executor.add_node(node)
        spinner.start()
        return agent.run()
    except (ConfigError, ValueError, FileNotFoundError, TimeoutError) as exc:
        print(f"uio-robot ros-agent: {exc}", file=sys.stderr)
        return 2
    finally:
        if agent is not None:
            agent.loop.close()
        spinning.clear()
        if spinner.is_alive():
            spinner.join(timeout=2.0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
