"""The `uio-robot` command: one entry point, one subcommand per job.

Errors that come from bad input (every project error type is a ValueError or OSError) end the command
with one line naming the problem and exit status 2; set UIO_ROBOT_DEBUG=1 for the traceback.

Subcommands are looked up lazily so that `uio-robot bench-loop` on a robot PC does not import torch or
MuJoCo unless the job needs them. Each subcommand's module exposes `main(argv: list[str]) -> int`.
"""

from __future__ import annotations

import importlib
import os
import sys

# name -> (module, one-line help). Modules are imported only when their subcommand runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "rollout": ("uio_robot.agent.rollout", "run one simulated episode with a policy and write a video"),
    "eval": ("uio_robot.agent.evaluate", "evaluate a policy on N episodes per task; results.json + plot"),
    "query": ("uio_robot.agent.query_cli", "ask the model a question about an image"),
    "record": ("uio_robot.agent.record_demos", "record scripted-expert demonstrations"),
    "train": ("uio_robot.policies.train", "train or fine-tune the UIO2 policy"),
    "record-vima": ("uio_robot.agent.record_vima", "record oracle demonstrations of the VIMA-style tasks"),
    "train-vima": ("uio_robot.policies.vima_train", "train a UIO2 primitive policy on VIMA-style demos"),
    "bench": ("uio_robot.policies.uio2.bench", "benchmark UIO2 inference stages"),
    "bench-loop": ("uio_robot.agent.bench_loop", "benchmark the control loop's timing"),
    "uio2-dump": ("uio_robot.policies.uio2.dump", "dump UIO2 preprocessing and network tensors for checking"),
    "ros-agent": ("uio_robot.bridges.ros.agent_node", "run the agent as a ROS 2 node"),
    "ros-sim": ("uio_robot.bridges.ros.sim_node", "run the MuJoCo tabletop robot as a ROS 2 node"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: uio-robot <command> [args...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Run `uio-robot <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"uio-robot: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("uio_robot"):
            print(f"uio-robot: command {name!r} is not available in this build ({exc})", file=sys.stderr)
            return 2
        print(f"uio-robot {name}: missing dependency {exc.name!r}; install the matching extra "
              "(e.g. pip install 'uio-robot[sim]' or 'uio-robot[ros]')", file=sys.stderr)
        return 2
    try:
        return int(module.main(rest) or 0)
    except (ValueError, OSError) as exc:
        # Bad input (config values, files, checkpoints, observations) is reported as one line naming the
        # problem; every such error type of the project derives from ValueError or OSError.
        if os.environ.get("UIO_ROBOT_DEBUG"):
            raise
        print(f"uio-robot {name}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
