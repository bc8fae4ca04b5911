"""How much a policy's success depends on acting in lock step: episodes with a fixed inference delay.

    MUJOCO_GL=egl python benchmarks/delay_emulation.py --delay 2 --replan 3 --mode given --episodes 20

The real-time loop on a slow device executes a chunk only from the row due when it arrives, while the
arm keeps moving on the previous chunk. This runs the same situation deterministically, without wall
time: a request made at step k sees the observation of step k and its chunk takes over at step
k + delay; requests go out every `replan` steps. Modes for the chunk that takes over:
- given:   rows play as given, from row `delay` on (what the loop does);
- tracked: the increments play as a path anchored at the state the request saw (`loop.track_chunks`);
- restart: the chunk plays from row 0 at its arrival (as if restamped to start when it arrives).
delay 0 with replan 4 is `uio-robot eval`'s lock step. Prints one JSON line with the success count.
Measured with the shipped model: agent/README.md ("Chunk tracking").
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from tqdm import tqdm

from uio_robot.agent.gym_robot import GymRobot
from uio_robot.agent.tracking import ChunkTracker
from uio_robot.policies.factory import build_policy

MODES = ("given", "tracked", "restart")


def run_episode(robot: GymRobot, policy, seed: int, delay: int, replan: int, mode: str, period: float) -> tuple:
    """(success, steps) of one episode under a fixed delay."""
    tracker = ChunkTracker(robot.increments) if mode == "tracked" else None
    robot.reset(seed=seed)
    policy.reset()
    active, pending, step = None, [], 0  # active: (first step of row 0, rows); pending: (arrival, start, rows)
    while not robot.is_done():
        obs = robot.observe()
        if step % replan == 0:
            obs.timestamp = step * period
            chunk = policy.act(obs)
            if tracker is not None:
                chunk = tracker.anchor(chunk, obs.state)
            pending.append((step + delay, step + delay if mode == "restart" else step, chunk.actions))
        while pending and pending[0][0] <= step:
            _, start, rows = pending.pop(0)
            active = (start, rows)
        action = np.asarray(robot.safe_action, np.float32)
        if active is not None and step - active[0] < len(active[1]):
            action = active[1][step - active[0]]
            if tracker is not None:
                action = np.clip(tracker.step(action, obs.state), robot.action_spec.low, robot.action_spec.high)
        robot.act(action)
        step += 1
    return robot.is_success(), step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="", help="a UIO2 checkpoint directory (default: the shipped model)")
    parser.add_argument("--task", default="uio_robot/Reach-v0")
    parser.add_argument("--delay", type=int, default=2, help="steps between a request and its chunk taking over")
    parser.add_argument("--replan", type=int, default=3, help="a request every this many steps")
    parser.add_argument("--mode", choices=MODES, default="given")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=100000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.delay < 0 or args.replan < 1 or args.episodes < 1:
        parser.error("need --delay >= 0, --replan >= 1, --episodes >= 1")
    robot = GymRobot.make(args.task, image_size=128)
    policy = build_policy("uio2", robot.action_spec, robot.state_spec, checkpoint=args.checkpoint,
                          device="cpu", dtype="float32", threads=args.threads, fast=True)
    period = getattr(policy, "period", 0.05)
    seeds = range(args.first_seed, args.first_seed + args.episodes)
    results, started = [], time.perf_counter()
    for seed in tqdm(seeds, desc=f"{args.mode} delay {args.delay}"):
        results.append(run_episode(robot, policy, seed, args.delay, args.replan, args.mode, period))
    robot.close()
    print(json.dumps({"task": args.task, "checkpoint": args.checkpoint or "shipped", "mode": args.mode,
                      "delay": args.delay, "replan": args.replan, "episodes": len(results),
                      "successes": int(sum(ok for ok, _ in results)), "first_seed": args.first_seed,
                      "failed_seeds": [s for s, (ok, _) in zip(seeds, results) if not ok],
                      "wall_s": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
