"""Success of the VIMA tasks' scripted oracles over many seeds, per task and level.

    python -m uio_robot.envs.vima.expert_eval --episodes 100 [--levels 1 2 3 4] [--tasks Push ...] [--seed 100000]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from tqdm import tqdm

from ..expert_eval import ExpertReport, run_expert
from .env import VimaEnv
from .partitions import LEVELS, level_tasks


def evaluate_oracle(task: str, level: int | str, seeds, on_episode=None, image_size: int = 64) -> ExpertReport:
    """Run the oracle for `task` at `level` on each seed, within the task's step budget."""
    env = VimaEnv(task, level=level, image_size=image_size)
    return run_expert(env, env.expert(), seeds, ExpertReport(task, env.level), on_episode=on_episode)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=100000)
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    parser.add_argument("--tasks", nargs="+", default=[], help="only these tasks (default: every task of a level)")
    parser.add_argument("--json", help="also write the reports here")
    args = parser.parse_args(argv)
    seeds = range(args.seed, args.seed + args.episodes)
    reports = []
    jobs = [(t, lv) for lv in args.levels for t in level_tasks(lv) if not args.tasks or t in args.tasks]
    if not jobs:
        parser.error(f"no task of {args.tasks} in levels {args.levels}")
    with tqdm(total=len(jobs) * args.episodes, unit="ep") as bar:
        for task, level in jobs:
            reports.append(evaluate_oracle(task, level, seeds, on_episode=lambda: bar.update(1)))
    print(f"{'level':<6} {'task':<20} {'success':>9} {'steps':>6}  failed seeds")
    for r in reports:
        print(f"{r.level:<6} {r.task:<20} {r.successes:>4}/{r.episodes:<4} {max(r.steps):>6}  {r.failed_seeds[:10]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in reports], f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
