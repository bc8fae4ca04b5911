"""`uio-robot bench-loop`: measure the control loop's timing (a benchmark that prints numbers, not a test).

Runs the loop on a simulated robot (the MuJoCo tabletop env through `GymRobot` with `--env`, else the
numpy point robot) with a chosen policy and rate, optionally with a concurrent query stream, and
prints the telemetry table. `--json FILE` writes the summary; its keys include `rate_hz`, `ticks`,
`overruns`, `latency_ms` {p50,p90,p99}, `jitter_ms` {p50,p99}, `query_latency_ms` {p50,p99}, `queries`.

Examples:
    uio-robot bench-loop --rate 20 --ticks 600 --policy standin --compute-ms 30 --query-every 0.2
    uio-robot bench-loop --policy uio2 --query-every 0.2        # the shipped model on its MuJoCo task
    uio-robot bench-loop --policy uio2 --worker process         # the model in a child process
"""

from __future__ import annotations

import argparse
import os
import threading

from .config import AppConfig, LoopConfig, PolicyConfig, SafetyConfig
from .loop import ControlLoop
from .policy_recipe import PolicyRecipe, describe_policy, policy_recipe_from_config
from .telemetry import format_table, write_json


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uio-robot bench-loop", description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=20.0, help="control rate in Hz (default 20)")
    p.add_argument("--ticks", type=int, default=600, help="ticks to run (default 600)")
    p.add_argument("--warmup", type=int, default=20, help="ticks run first and left out of the numbers")
    p.add_argument("--env", default="", help="gymnasium env id (e.g. uio_robot/Reach-v0); default: point robot")
    p.add_argument("--policy", choices=("standin", "zero", "random", "uio2"), default="standin")
    p.add_argument("--checkpoint", default="", help="uio2: checkpoint directory (default: the shipped model)")
    p.add_argument("--device", default="auto", help="uio2: cpu | cuda | auto")
    p.add_argument("--threads", type=int, default=1, help="uio2: torch CPU threads (0 = torch's default)")
    p.add_argument("--compute-ms", type=float, default=30.0, help="stand-in compute time per chunk")
    p.add_argument("--step-ms", type=float, default=5.0, help="stand-in compute time per query decode step")
    p.add_argument("--query-steps", type=int, default=16, help="stand-in decode steps per query")
    p.add_argument("--horizon", type=int, default=8, help="actions per chunk")
    p.add_argument("--replan-every", type=int, default=0,
                   help="ticks between chunk requests (default 4; uio2: half its chunk length)")
    p.add_argument("--on-deadline", choices=("continue", "hold", "stop"), default="continue")
    p.add_argument("--ensemble", action="store_true", help="temporal ensembling of overlapping chunks")
    p.add_argument("--query-every", type=float, default=0.0, help="submit a query every S seconds (0 = none)")
    p.add_argument("--spin-ms", type=float, default=1.0, help="busy-wait before each deadline")
    p.add_argument("--switch-interval-ms", type=float, default=LoopConfig.gil_switch_interval_s * 1e3,
                   help="Python's thread switch interval while the loop runs (loop.gil_switch_interval_s; "
                        "default %(default)s; 0 = keep Python's own, 5 ms)")
    p.add_argument("--max-pending-queries", type=int, default=LoopConfig.max_pending_queries,
                   help="queries waiting beyond this are rejected at once (default %(default)s)")
    p.add_argument("--no-pause-queries", action="store_true",
                   help="let query decoding run through control ticks (to measure what the pause buys)")
    p.add_argument("--worker", choices=("thread", "process"), default=LoopConfig.worker,
                   help="where the policy runs (loop.worker): a thread beside the loop or a child process")
    p.add_argument("--json", default="", help="write the summary as JSON to this file")
    return p


class _Endless:
    """A robot whose episode never ends, so a timing run gets all its ticks (after success the env keeps
    simulating the arm holding its pose)."""

    def __init__(self, robot):
        self._robot = robot

    def __getattr__(self, name):
        return getattr(self._robot, name)

    def is_done(self) -> bool:
        return False


def _robot(args):
    if not args.env and args.policy == "uio2":
        args.env = "uio_robot/Reach-v0"  # the task the shipped model was trained on
    if not args.env:
        from .sim_robot import PointRobot

        return PointRobot(dt=1.0 / args.rate)
    from .gym_robot import GymRobot

    return _Endless(GymRobot.make(args.env, max_episode_steps=args.ticks + args.warmup + 10))


def _model_config(args) -> PolicyConfig:
    return PolicyConfig(kind="uio2", checkpoint=args.checkpoint, device=args.device, threads=args.threads)


def _recipe(args, robot, loop_cfg: LoopConfig) -> PolicyRecipe:
    """The policy as a recipe: the loop builds it in its worker thread's process or in the child."""
    from uio_robot.policies import simple

    spec, period = robot.action_spec, 1.0 / args.rate
    if args.policy == "uio2":
        app = AppConfig(loop=loop_cfg, policy=_model_config(args))
        return policy_recipe_from_config(app, spec, robot.state_spec)
    if args.policy == "standin":
        return PolicyRecipe(simple.StandInPolicy, dict(
            action_spec=spec, horizon=args.horizon, period=period, compute_ms=args.compute_ms,
            step_ms=args.step_ms, query_steps=args.query_steps))
    kind = simple.ZeroPolicy if args.policy == "zero" else simple.RandomPolicy
    return PolicyRecipe(kind, dict(action_spec=spec, horizon=args.horizon, period=period))


def _model_chunk(args) -> int:
    """The uio2 checkpoint's chunk length, read from its metadata (the model itself may load elsewhere)."""
    return (describe_policy(_model_config(args)).chunk or 0) if args.policy == "uio2" else 0


def _query_stream(loop: ControlLoop, robot, every_s: float, stop: threading.Event) -> None:
    questions = ("what is on the table?", "describe the scene.", "where is the gripper?")
    i = 0
    while not stop.wait(every_s):
        try:
            images = robot.observe().images
        except RuntimeError:
            continue
        loop.query(images, questions[i % len(questions)])
        i += 1


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if (args.ticks < 1 or args.rate <= 0 or args.query_every < 0 or not 0 <= args.switch_interval_ms <= 100
            or args.max_pending_queries < 1):
        print("bench-loop: need --ticks >= 1, --rate > 0, --query-every >= 0, --switch-interval-ms in [0, 100], "
              "--max-pending-queries >= 1", flush=True)
        return 2
    robot = _robot(args)
    if not args.replan_every:
        # the same rule as rollout and ros-agent (rollout.fit_replanning): at most every chunk // 2 ticks
        chunk = _model_chunk(args)
        args.replan_every = max(1, chunk // 2) if chunk else 4
    cfg = LoopConfig(rate_hz=args.rate, replan_every=args.replan_every, temporal_ensemble=args.ensemble,
                     on_deadline=args.on_deadline, spin_s=args.spin_ms / 1e3,
                     pause_queries_near_tick=not args.no_pause_queries,
                     gil_switch_interval_s=args.switch_interval_ms / 1e3, max_pending_queries=args.max_pending_queries,
                     worker=args.worker)
    loop = ControlLoop(robot, _recipe(args, robot, cfg), cfg, SafetyConfig())
    stop = threading.Event()
    streamer = None
    load_before = os.getloadavg()
    try:
        if args.warmup:
            loop.run(max_ticks=args.warmup, seed=0)
        if args.query_every > 0:
            streamer = threading.Thread(target=_query_stream, args=(loop, robot, args.query_every, stop),
                                        daemon=True)
            streamer.start()
        summary = loop.run(max_ticks=args.ticks, reset_robot=False)
    finally:
        stop.set()
        if streamer is not None:
            streamer.join()
        loop.close()
        robot.close()
    summary["config"] = {k: v for k, v in vars(args).items() if k != "json"}
    # Timing on a shared machine depends on what else runs: keep the load and this process's niceness.
    summary["machine"] = {"cpus": os.cpu_count(), "nice": os.nice(0), "load_avg_before": list(load_before),
                          "load_avg_after": list(os.getloadavg())}
    print(format_table(summary))
    m = summary["machine"]
    print(f"machine: {m['cpus']} CPUs, nice {m['nice']}, load average {m['load_avg_before'][0]:.2f} before, "
          f"{m['load_avg_after'][0]:.2f} after")
    if args.json:
        write_json(summary, args.json)
        print(f"wrote {args.json}")
    if summary["ticks"] < args.ticks:
        print(f"note: the episode ended after {summary['ticks']} ticks", flush=True)
    return 0

