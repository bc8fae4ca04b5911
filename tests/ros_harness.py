"""Test harness for the ROS 2 nodes: real rclpy over real DDS, on loopback only, one domain per test.

`ros_domain` gives each test its own ROS_DOMAIN_ID (discovery limited to localhost, logs in tmp);
`NodeProcess` starts `uio-robot ros-agent|ros-sim` as a subprocess whose stderr goes to a file (the node's
log, which tests read for the logged reasons) and is always ended by the fixture; `Peer` is an rclpy
node inside the test process that plays the other side (robot, operator) and collects what it hears.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data

from uio_robot.bridges.ros.ros_robot import latched, reliable

_counter = itertools.count()


def next_domain() -> int:
    """A domain id in 1..100 unlikely to collide with another test or another run on this machine."""
    return (os.getpid() * 13 + next(_counter) * 7) % 100 + 1


def ros_environment(domain: int, log_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_LOG_DIR=str(log_dir),
               MUJOCO_GL=env.get("MUJOCO_GL", "egl"), PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
    env.pop("ROS_STATIC_PEERS", None)
    return env


class NodeProcess:
    """`uio-robot <command> <args>` in a subprocess; `stop()` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, command: str, args: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "uio_robot.agent.cli", command, *args], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


class Peer:
    """An rclpy node in the test process (own context and domain) spinning in a thread; records messages."""

    def __init__(self, domain: int, name: str = "test_peer"):
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.heard: dict[str, list[tuple[float, object]]] = defaultdict(list)
        self._running = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._running:
            self.executor.spin_once(timeout_sec=0.05)

    def listen(self, msg_type, topic: str, qos: str = "reliable") -> None:
        profile = {"reliable": reliable(50), "sensor": qos_profile_sensor_data, "latched": latched()}[qos]

        def record(msg) -> None:
            with self.lock:
                self.heard[topic].append((time.monotonic(), msg))
        self.node.create_subscription(msg_type, topic, record, profile)

    def messages(self, topic: str, since: float = 0.0, until: float = float("inf")) -> list:
        with self.lock:
            return [m for t, m in self.heard[topic] if since <= t <= until]

    def wait_for(self, topic: str, count: int = 1, timeout: float = 30.0, since: float = 0.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.messages(topic, since)
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise TimeoutError(f"heard {len(self.messages(topic, since))} of {count} messages on {topic!r} "
                           f"in {timeout} s")

    def call(self, srv_type, name: str, request, timeout: float = 10.0):
        client = self.node.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {name!r} not available")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"service {name!r} did not answer")
            time.sleep(0.01)
        return future.result()

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=2)
        self.executor.shutdown(timeout_sec=1)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
