"""`uio-robot record`: scripted-expert demonstrations and VQA scenes for training the UIO2 policy.

For every task and seed the task's expert runs one episode (up to the task's step budget) and the
episode is written with its success flag (training keeps the successful ones); the first frame's
VQA pairs from the simulator's ground truth go with it. `--vqa-scenes` adds VQA-only scenes (a reset
and one rendered frame) of `--vqa-tasks`, which is cheap and widens the VQA data. Seeds must stay below
100000: evaluation uses the seeds from there on. The format is documented in `policies/dataset.py`;
an interrupted run can be restarted with the same arguments and continues where it stopped.
"""

from __future__ import annotations

import argparse
import signal
import sys

import numpy as np

from uio_robot.policies.dataset import HELDOUT_SEED, DemoWriter

MAX_ACTION_NOISE = 0.05  # metres: one full step of the action space


def _tasks(text: str) -> list[str]:
    from uio_robot.envs import TASKS

    names = [t.strip().removeprefix("uio_robot/").removesuffix("-v0") for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown task(s) {unknown}; known: {sorted(TASKS)}")
    return names


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="uio-robot record", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="dataset directory (created; an existing one is extended)")
    p.add_argument("--tasks", type=_tasks, default=["Reach"], help="comma-separated tasks, e.g. Reach,PickPlace")
    p.add_argument("--episodes", type=int, default=300, help="episodes per task")
    p.add_argument("--seed", type=int, default=0, help="first seed; each task uses seeds seed .. seed+episodes-1")
    p.add_argument("--vqa-scenes", type=int, default=0, help="VQA-only scenes per task of --vqa-tasks")
    p.add_argument("--vqa-tasks", type=_tasks, default=None, help="tasks for VQA-only scenes (default: all)")
    p.add_argument("--vqa-max-objects", type=int, default=0,
                   help="VQA-only scenes keep at most this many of the task's objects (0: all); fewer "
                        "objects make easier grounding data")
    p.add_argument("--max-vqa-pairs", type=int, default=None, help="keep at most this many pairs per scene")
    p.add_argument("--action-noise", type=float, default=0.0,
                   help="std (metres) of Gaussian noise added to each executed x/y/z step; the recorded action "
                        "stays the expert's, so the demos show how to recover from off-path states (DART)")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--cameras", default="image", help="comma-separated: image, wrist_image")
    args = p.parse_args(argv)
    if args.episodes < 0 or args.vqa_scenes < 0 or args.vqa_max_objects < 0:
        p.error("--episodes, --vqa-scenes and --vqa-max-objects must be >= 0")
    if not 0 <= args.action_noise <= MAX_ACTION_NOISE:
        p.error(f"--action-noise must lie in [0, {MAX_ACTION_NOISE}] metres (got {args.action_noise})")
    last = args.seed + args.episodes + args.vqa_scenes - 1
    if args.seed < 0 or last >= HELDOUT_SEED:
        p.error(f"seeds {args.seed}..{last} must lie in [0, {HELDOUT_SEED}) (evaluation uses {HELDOUT_SEED}+)")
    args.cameras = [c.strip() for c in args.cameras.split(",") if c.strip()]
    return args


def run_episode(env, expert, seed: int, max_pairs: int | None, action_noise: float = 0.0):
    """One expert episode: (instruction, frames per camera, states, actions, success, VQA pairs, the
    actions executed, or None where they are the recorded ones).

    With `action_noise` > 0 the executed step gets seeded Gaussian noise on x/y/z while the recorded
    action is the expert's choice in the state it saw: states off the expert's straight path, each
    labelled with the correction."""
    from uio_robot.envs.vqa import vqa_pairs

    obs, info = env.reset(seed=seed)
    pairs = vqa_pairs(env.scene_info(), np.random.default_rng(seed), max_pairs)
    noise_rng = np.random.default_rng([seed, 1])
    cameras = [k for k in obs if k not in ("state", "instruction")]
    frames = {c: [] for c in cameras}
    states, actions, sent = [], [], []
    success = False
    for _ in range(env.task.max_episode_steps):
        action = np.clip(expert.act(obs), env.action_space.low, env.action_space.high)
        executed = action
        if action_noise > 0:
            noise = np.zeros_like(action)
            noise[:3] = noise_rng.normal(0.0, action_noise, 3)
            executed = np.clip(action + noise, env.action_space.low, env.action_space.high)
        for c in cameras:
            frames[c].append(obs[c])
        states.append(obs["state"])
        actions.append(action)
        sent.append(executed)
        obs, _, terminated, _, info = env.step(executed)
        success = bool(info["is_success"])
        if terminated:
            break
    return (obs["instruction"], {c: np.stack(v) for c, v in frames.items()}, np.stack(states),
            np.stack(actions), success, pairs, np.stack(sent) if action_noise > 0 else None)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # `kill` or `timeout` stops a recording like Ctrl-C: the writer's close in `finally` lists the last files
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    from tqdm import tqdm

    from uio_robot.envs import ACTION_NAMES, STATE_NAMES, TASKS, TabletopEnv
    from uio_robot.envs.experts import make_expert
    from uio_robot.envs.vqa import vqa_pairs

    vqa_tasks = args.vqa_tasks if args.vqa_tasks is not None else list(TASKS)
    probe = TabletopEnv(args.tasks[0], image_size=args.image_size, images=tuple(args.cameras))
    writer = DemoWriter(args.out, ACTION_NAMES, STATE_NAMES, probe.control_dt, args.image_size, args.cameras)
    probe.close()
    jobs = [("episodes", t, args.seed + i) for t in args.tasks for i in range(args.episodes)]
    # VQA-only scenes of a demo task take the seeds after its episodes, so no scene is there twice
    jobs += [("scenes", t, args.seed + (args.episodes if t in args.tasks else 0) + i)
             for t in (vqa_tasks if args.vqa_scenes else []) for i in range(args.vqa_scenes)]
    todo = [j for j in jobs if not writer.has(*j)]
    envs: dict[str, TabletopEnv] = {}
    counts = {t: [0, 0] for t in args.tasks}
    try:
        for kind, task, seed in tqdm(todo, desc="record", unit="ep"):
            if task not in envs:
                envs[task] = TabletopEnv(task, image_size=args.image_size, images=tuple(args.cameras))
            env = envs[task]
            if kind == "scenes":
                obs, _ = env.reset(seed=seed, options={"max_objects": args.vqa_max_objects})
                pairs = vqa_pairs(env.scene_info(), np.random.default_rng(seed), args.max_vqa_pairs)
                writer.add_scene(task, seed, obs["instruction"], obs[args.cameras[0]], pairs)
                continue
            expert = make_expert(env)
            instruction, frames, states, actions, success, pairs, executed = run_episode(
                env, expert, seed, args.max_vqa_pairs, args.action_noise)
            writer.add_episode(task, seed, instruction, frames, states, actions, success, pairs, executed)
            counts[task][0] += 1
            counts[task][1] += int(success)
    finally:
        writer.close()  # lists what was recorded, also after Ctrl-C
        for env in envs.values():
            env.close()
    for task, (n, ok) in counts.items():
        if n:
            print(f"{task}: {ok}/{n} expert episodes succeeded this run")
    index = writer.index
    print(f"{args.out}: {len(index['episodes'])} episodes "
          f"({sum(e['success'] for e in index['episodes'])} successful), {len(index['scenes'])} VQA scenes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
