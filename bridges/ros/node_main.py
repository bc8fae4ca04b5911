"""The start-up and shut-down both console-script nodes (`ros-agent`, `ros-sim`) share.

Why one place: both read `[hydra overrides] [--ros-args ...]`, print their docstring for --help, turn a
bad config into one line and exit code 2, and must leave rclpy shut down however they end.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from uio_robot.agent.config import AppConfig, ConfigError, load_config


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Hydra overrides before `--ros-args`, ROS arguments from it on."""
    if "--ros-args" in argv:
        i = argv.index("--ros-args")
        return argv[:i], argv[i:]
    return list(argv), []


def read_command_line(command: str, doc: str | None, argv: list[str],
                      defaults: tuple[str, ...] = ()) -> tuple[AppConfig, list[str]] | int:
    """(config, ROS arguments), or the exit code when there is nothing to run: 0 after --help, 2 after a
    config error (printed as one line). `defaults` go before the user's overrides."""
    if any(a in ("-h", "--help") for a in argv):
        print(doc)
        return 0
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    overrides, ros_args = split_args(argv)
    try:
        return load_config([*defaults, *overrides]), ros_args
    except ConfigError as exc:
        print(f"uio-robot {command}: {exc}", file=sys.stderr)
        return 2


@contextmanager
def ros_node(command: str, cfg: AppConfig, ros_args: list[str]) -> Iterator[tuple[Node, SingleThreadedExecutor]]:
    """rclpy started (without its signal handlers: the caller installs its own), the node `cfg.ros.node_name`
    and an executor; all shut down on exit."""
    rclpy.init(args=[command, *ros_args], signal_handler_options=SignalHandlerOptions.NO)
    node = Node(cfg.ros.node_name)
    executor = SingleThreadedExecutor()
    try:
        yield node, executor
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()


def run_node(command: str, doc: str | None, argv: list[str],
             serve: Callable[[Node, SingleThreadedExecutor, AppConfig], int], defaults: tuple[str, ...] = ()) -> int:
    """A node's whole `main`: read the command line, then `serve(node, executor, cfg)` inside `ros_node`."""
    parsed = read_command_line(command, doc, argv, defaults)
    if isinstance(parsed, int):
        return parsed
    cfg, ros_args = parsed
    with ros_node(command, cfg, ros_args) as (node, executor):
        return serve(node, executor, cfg)
