"""The ROS 2 bridge's overhead per control tick, over real DDS on loopback.

    python benchmarks/ros_overhead.py [--rate 20] [--size 224] [--seconds 15] [--json FILE]

A separate process plays the robot: it publishes size x size rgb8 images and the JointStates at the
control rate. This process runs the agent side exactly as `uio-robot ros-agent` does (`RosRobot` and the
`ControlLoop`) with a zero policy, so what is measured is the bridge, not a model:
- convert: image message -> numpy in the subscription callback;
- observe + publish: the tick's `observe()` and `act()` (command built and published);
- bridge overhead per tick = convert (of the frame used) + observe + publish: image received -> command published,
  leaving out the wait for the tick's deadline (the loop ticks on its own clock, not on frame arrival);
- transport: the image's header stamp (publisher's clock) -> received, i.e. DDS on loopback;
- observation age at command: oldest input received -> its command published (includes the deadline wait).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import threading
import time

import numpy as np


def publish_robot(rate: float, size: int, seconds: float, domain: int, stop) -> None:
    """The robot process: images + joint states at `rate` for `seconds` or until `stop` is set."""
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    import rclpy
    from rclpy.qos import qos_profile_sensor_data

    from uio_robot.bridges.ros import conversions as cv

    rclpy.init()
    node = rclpy.create_node("bench_robot")
    cam = node.create_publisher(cv.Image, "camera/image_raw", qos_profile_sensor_data)
    joints = node.create_publisher(cv.JointState, "joint_states", qos_profile_sensor_data)
    ee = node.create_publisher(cv.JointState, "ee_state", qos_profile_sensor_data)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(4)]
    start = time.monotonic()
    k = 0
    while time.monotonic() - start < seconds and not stop.is_set():
        stamp = node.get_clock().now().to_msg()
        cam.publish(cv.array_to_image(frames[k % 4], stamp))
        joints.publish(cv.make_joint_state([f"joint{i}" for i in range(1, 8)], np.zeros(7), stamp))
        ee.publish(cv.make_joint_state(["grip_x", "grip_y", "grip_z", "grip_yaw", "gripper_opening"], np.zeros(5),
                                       stamp))
        k += 1
        time.sleep(max(0.0, start + k / rate - time.monotonic()))
    node.destroy_node()
    rclpy.shutdown()


def stats(values_s: list[float]) -> dict:
    v = np.asarray(values_s) * 1e3
    return {"p50_ms": round(float(np.percentile(v, 50)), 3), "p99_ms": round(float(np.percentile(v, 99)), 3),
            "max_ms": round(float(v.max()), 3), "n": int(v.size)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    domain = os.getpid() % 100 + 1
    os.environ.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    os.environ.setdefault("ROS_LOG_DIR", "/tmp/uio_robot_ros_bench_logs")

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from uio_robot.agent.config import load_config
    from uio_robot.agent.loop import ControlLoop
    from uio_robot.bridges.ros.conversions import to_seconds
    from uio_robot.bridges.ros.ros_robot import RosRobot
    from uio_robot.policies.simple import ZeroPolicy

    cfg = load_config([f"loop.rate_hz={args.rate}", f"ros.image_height={args.size}", f"ros.image_width={args.size}",
                       "ros.robot_reset_service=", "ros.success_topic=", "ros.instruction=benchmark"])
    rclpy.init()
    node = Node("bench_agent")
    robot = RosRobot(node, cfg.ros, 1.0 / args.rate, cfg.safety.max_obs_age_s)
    transport: list[float] = []
    node.create_subscription(Image, "camera/image_raw",
                             lambda m: transport.append(time.time() - to_seconds(m.header.stamp)),
                             qos_profile_sensor_data)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinning = True

    def spin() -> None:
        while spinning:
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    robot_proc = ctx.Process(target=publish_robot, args=(args.rate, args.size, args.seconds + 30, domain, stop))
    robot_proc.start()
    observe_s, act_s, age_s, convert_used = [], [], [], []
    inner_observe, inner_act = robot.observe, robot.act

    def timed_observe():
        t0 = time.perf_counter()
        obs = inner_observe()
        observe_s.append(time.perf_counter() - t0)
        convert_used.append(robot.convert_s[-1])
        timed_observe.last = obs
        return obs

    def timed_act(action):
        t0 = time.perf_counter()
        inner_act(action)
        act_s.append(time.perf_counter() - t0)
        age_s.append(time.monotonic() - timed_observe.last.timestamp)

    robot.observe, robot.act = timed_observe, timed_act
    try:
        robot.wait_for_observation(30.0)
        observe_s.clear()
        convert_used.clear()
        with ControlLoop(robot, ZeroPolicy(robot.action_spec, 6, 1.0 / args.rate), cfg.loop, cfg.safety) as loop:
            summary = loop.run(max_ticks=int(args.seconds * args.rate), reset_robot=False)
    finally:
        spinning = False
        spinner.join(timeout=2)
        stop.set()
        robot_proc.join(timeout=10)
        if robot_proc.is_alive():
            robot_proc.kill()
        executor.shutdown(timeout_sec=1)
        node.destroy_node()
        rclpy.shutdown()
    n = min(len(observe_s), len(act_s), len(convert_used))
    overhead = [c + o + a for c, o, a in zip(convert_used[:n], observe_s[:n], act_s[:n])]
    result = {"rate_hz": args.rate, "image": f"{args.size}x{args.size} rgb8", "ticks": summary["ticks"],
              "loop_rate_hz": summary["rate_hz"], "jitter_p99_ms": summary["jitter_ms"]["p99"],
              "convert": stats(robot.convert_s[5:]), "observe": stats(observe_s), "publish": stats(act_s),
              "bridge_overhead_per_tick": stats(overhead), "transport": stats(transport[5:]),
              "observation_age_at_command": stats(age_s), "interventions": summary["interventions"]}
    rows = [("image -> numpy (callback)", "convert"), ("observe() in the tick", "observe"),
            ("command built + published", "publish"), ("bridge overhead per tick", "bridge_overhead_per_tick"),
            ("DDS transport (stamp -> callback)", "transport"), ("obs age at command", "observation_age_at_command")]
    print(f"ROS 2 bridge overhead: {result['image']} at {args.rate:g} Hz, {summary['ticks']} ticks "
          f"(loop {summary['rate_hz']} Hz, jitter p99 {summary['jitter_ms']['p99']} ms)")
    for label, key in rows:
        s = result[key]
        print(f"  {label:<36} p50 {s['p50_ms']:7.3f} ms   p99 {s['p99_ms']:7.3f} ms   max {s['max_ms']:7.3f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
