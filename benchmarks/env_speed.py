"""Environment steps per second of the tabletop suite: one env and a vector of 2, with and without images.

One step = one control step (physics substeps for 0.05 s plus the requested camera images).

    MUJOCO_GL=egl python benchmarks/env_speed.py [--steps 300] [--task PickPlace]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from functools import partial

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

import uio_robot.envs  # noqa: E402,F401  (registers the ids)

CONFIGS = [
    ("state only", (), 128),
    ("front 128", ("image",), 128),
    ("front+wrist 128", ("image", "wrist_image"), 128),
    ("front 224", ("image",), 224),
    ("front+wrist 224", ("image", "wrist_image"), 224),
]


def _actions(space: gym.Space, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(space.low, space.high, size=(n, *space.shape)).astype(np.float32) * 0.5


def single_env_rate(env_id: str, images: tuple, size: int, steps: int) -> float:
    env = gym.make(env_id, images=images, image_size=size)
    env.reset(seed=0)
    actions = _actions(env.action_space, steps)
    for a in actions[:10]:  # warm-up: renderer creation, caches
        env.step(a)
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def vector_env_rate(env_id: str, images: tuple, size: int, steps: int, n_envs: int = 2) -> float:
    # spawn, not fork: this process has already rendered, and EGL state does not survive a fork
    make = partial(gym.make, f"uio_robot.envs:{env_id}", images=images, image_size=size)
    vec = gym.vector.AsyncVectorEnv([make] * n_envs, context="spawn")
    try:
        vec.reset(seed=0)
        actions = _actions(vec.action_space, steps)
        for a in actions[:10]:
            vec.step(a)
        start = time.perf_counter()
        for a in actions:
            vec.step(a)
        return n_envs * steps / (time.perf_counter() - start)
    finally:
        vec.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--task", default="PickPlace")
    parser.add_argument("--no-vector", action="store_true", help="skip the AsyncVectorEnv measurements")
    args = parser.parse_args()
    env_id = f"uio_robot/{args.task}-v0"
    print(f"{env_id}, {args.steps} steps per measurement, MUJOCO_GL={os.environ['MUJOCO_GL']}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'images':<18} {'1 env (steps/s)':>16} {'2 envs (env steps/s)':>22}")
    rows = []
    for label, images, size in CONFIGS:
        one = single_env_rate(env_id, images, size, args.steps)
        two = None if args.no_vector else vector_env_rate(env_id, images, size, args.steps)
        rows.append({"images": label, "single_env_steps_per_s": round(one, 1),
                     "vector2_env_steps_per_s": None if two is None else round(two, 1)})
        print(f"{label:<18} {one:>16.1f} {'-' if two is None else f'{two:.1f}':>22}", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
