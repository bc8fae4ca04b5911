"""Success rate of each tabletop task's scripted expert over N seeds (default 200).

    MUJOCO_GL=egl python benchmarks/expert_success.py --episodes 200
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from tqdm import tqdm

from uio_robot.envs import TASKS
from uio_robot.envs.expert_eval import evaluate_expert


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    args = parser.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.episodes)
    for task in args.tasks:
        with tqdm(total=args.episodes, desc=task) as bar:
            rep = evaluate_expert(task, seeds, on_episode=bar.update)
        row = {"task": task, "episodes": rep.episodes, "success_rate": rep.rate,
               "mean_steps": float(np.mean(rep.steps)), "max_steps": int(np.max(rep.steps)),
               "failed_seeds": rep.failed_seeds}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
