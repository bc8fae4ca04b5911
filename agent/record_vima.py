"""`uio-robot record-vima`: oracle demonstrations of the native VIMA-style tasks for `train-vima`.

    uio-robot record-vima --out DIR [--tasks VisualManipulation,Rearrange,SameShape,Push] [--episodes 200]
                          [--seed 0] [--level train] [--image-size 128] [--camera top_image]

Every (task, seed) runs the task's oracle for one episode; the camera image before each primitive, the
primitive, the interleaved prompt and the success flag are written (`policies/vima_data.py`). Seeds stay
below 100000 (evaluation uses the seeds from there on). An interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import signal
import sys

import numpy as np

from uio_robot.policies.dataset import HELDOUT_SEED
from uio_robot.policies.vima_data import VimaDemoWriter


def parse_args(argv: list[str]) -> argparse.Namespace:
    from uio_robot.envs.vima import level_tasks

    p = argparse.ArgumentParser(prog="uio-robot record-vima", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--level", default="train", help="partition: train (default) or 1-4")
    p.add_argument("--tasks", default="", help="comma-separated; default: every task of the level")
    p.add_argument("--episodes", type=int, default=200, help="episodes per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--camera", default="top_image", choices=["top_image", "image"])
    args = p.parse_args(argv)
    known = level_tasks(args.level)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] or known
    unknown = [t for t in args.tasks if t not in known]
    if unknown:
        p.error(f"tasks {unknown} are not in level {args.level} ({known})")
    if args.episodes < 1 or args.seed < 0 or args.seed + args.episodes > HELDOUT_SEED:
        p.error(f"seeds {args.seed}..{args.seed + args.episodes - 1} must lie in [0, {HELDOUT_SEED})")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # `kill` or `timeout` stops a recording like Ctrl-C: the writer's close in `finally` lists the last files
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    from tqdm import tqdm

    from uio_robot.envs.vima import ACTION_HIGH, ACTION_LOW, ACTION_NAMES, VimaEnv, observation_prompt

    writer = VimaDemoWriter(args.out, ACTION_NAMES, ACTION_LOW, ACTION_HIGH, args.camera, args.image_size)
    jobs = [(t, s) for t in args.tasks for s in range(args.seed, args.seed + args.episodes)]
    envs: dict[str, VimaEnv] = {}
    ok = {t: [0, 0] for t in args.tasks}
    try:
        for task, seed in tqdm([j for j in jobs if not writer.has(j[0], args.level, j[1])], desc="record-vima",
                               unit="ep"):
            env = envs.get(task) or envs.setdefault(task, VimaEnv(task, level=args.level, image_size=args.image_size))
            obs, info = env.reset(seed=seed)
            oracle = env.expert()
            parts, frames, actions, done = observation_prompt(obs), [], [], False
            while not done:
                action = oracle.act(obs)
                frames.append(obs[args.camera])
                actions.append(action)
                obs, _, terminated, truncated, info = env.step(action)
                done = terminated or truncated
            writer.add(task, args.level, seed, obs["instruction"], parts, np.stack(frames), np.stack(actions),
                       info["is_success"])
            ok[task][0] += 1
            ok[task][1] += int(info["is_success"])
    finally:
        writer.close()  # lists what was recorded, also after Ctrl-C
        for env in envs.values():
            env.close()
    for task, (n, s) in ok.items():
        if n:
            print(f"{task}: {s}/{n} oracle episodes succeeded")
    print(f"{args.out}: {len(writer.index['episodes'])} episodes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
