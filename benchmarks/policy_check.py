"""Quick closed-loop check of a trained UIO2 policy: task success and VQA accuracy on held-out seeds.

    python benchmarks/policy_check.py CHECKPOINT --task Reach --episodes 50 --vqa-scenes 40

Episodes use seeds from 100000 on (never used for training). Each request's whole chunk is executed
before the next request (`--execute` fewer to re-plan sooner). VQA: exact match of the answer text,
except "where" questions, which count as right when the grounded point lies within `--point-tol`
(normalized image units) of the true object centre. Prints one summary line per part and, with
`--json`, writes the numbers to a file. This is the training side's fast check; `uio-robot eval` is the
full evaluation.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np

from uio_robot.envs import TabletopEnv
from uio_robot.envs.vqa import vqa_pairs
from uio_robot.policies.types import Observation
from uio_robot.policies.uio2_policy import UIO2Policy

EVAL_SEED = 100_000


def run_episodes(policy: UIO2Policy, task: str, episodes: int, execute: int, seed: int) -> dict:
    env = TabletopEnv(task, images=(policy.format.camera,))
    successes, act_times, steps_used = 0, [], []
    try:
        for k in range(episodes):
            obs, info = env.reset(seed=seed + k)
            policy.reset()
            steps, done = 0, False
            while steps < env.task.max_episode_steps and not done:
                start = time.perf_counter()
                chunk = policy.act(Observation(images={policy.format.camera: obs[policy.format.camera]},
                                               state=obs["state"], instruction=obs["instruction"],
                                               timestamp=steps * env.control_dt))
                act_times.append(time.perf_counter() - start)
                for action in chunk.actions[:execute]:
                    obs, _, done, _, info = env.step(action)
                    steps += 1
                    if done or steps >= env.task.max_episode_steps:
                        break
            successes += int(info["is_success"])
            steps_used.append(steps)
    finally:
        env.close()
    return {"task": task, "episodes": episodes, "success_rate": successes / max(episodes, 1),
            "mean_steps": float(np.mean(steps_used)), "act_ms_median": 1000 * float(np.median(act_times))}


def run_vqa(policy: UIO2Policy, tasks: list[str], scenes: int, seed: int, point_tol: float) -> dict:
    right, total = defaultdict(int), defaultdict(int)
    for task in tasks:
        env = TabletopEnv(task, images=("image",))
        try:
            for k in range(scenes):
                obs, _ = env.reset(seed=seed + k)
                image = obs["image"]
                for pair in vqa_pairs(env.scene_info(), np.random.default_rng(seed + k)):
                    kind = pair["kind"]
                    total[kind] += 1
                    if kind == "where":
                        g = policy.ground({"image": image}, pair["question"])
                        if g.point is not None:
                            u, v = (float(s) for s in pair["answer"].split())
                            h, w = image.shape[:2]
                            err = np.hypot(g.point[0] / w - u, g.point[1] / h - v)
                            right[kind] += int(err <= point_tol)
                    else:
                        right[kind] += int(policy.query({"image": image}, pair["question"]) == pair["answer"])
        finally:
            env.close()
    n = sum(total.values())
    return {"accuracy": sum(right.values()) / max(n, 1), "questions": n,
            "per_kind": {k: round(right[k] / total[k], 3) for k in sorted(total)}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--task", default="Reach")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--execute", type=int, default=4, help="actions of each chunk executed before re-planning")
    p.add_argument("--vqa-scenes", type=int, default=20, help="held-out scenes per task of --vqa-tasks")
    p.add_argument("--vqa-tasks", default="Reach,Push,PickPlace,Stack,PickByDescription")
    p.add_argument("--point-tol", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=EVAL_SEED)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.seed < EVAL_SEED:
        p.error(f"--seed must be >= {EVAL_SEED} (lower seeds are training data)")
    policy = UIO2Policy(args.checkpoint, device="cpu")
    out = {"checkpoint": args.checkpoint, "seed": args.seed}
    if args.episodes:
        out["control"] = run_episodes(policy, args.task, args.episodes, args.execute, args.seed)
        c = out["control"]
        print(f"{c['task']}: success {c['success_rate']:.1%} of {c['episodes']} episodes, "
              f"mean steps {c['mean_steps']:.1f}, act {c['act_ms_median']:.0f} ms (median)")
    if args.vqa_scenes:
        tasks = [t for t in args.vqa_tasks.split(",") if t]
        out["vqa"] = run_vqa(policy, tasks, args.vqa_scenes, args.seed, args.point_tol)
        v = out["vqa"]
        print(f"VQA: accuracy {v['accuracy']:.1%} of {v['questions']} questions; per kind {v['per_kind']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
