"""`uio-robot eval eval.suite=vima|vima_bench`: success per task and per level on VIMA-style tasks.

    uio-robot eval eval.suite=vima eval.levels=[1,2,3,4] [eval.tasks=[VisualManipulation]] [eval.episodes=N]
                   [eval.seed=S] [eval.num_envs=E] [eval.videos=V] [eval.expert=true] [policy.checkpoint=DIR]

`vima` runs the native MuJoCo tasks (`uio_robot.envs.vima`), `vima_bench` the original VIMA-Bench through
the adapter (`uio_robot.envs.vima_bench`; a clear error when it is not installed). For every level and
every task of that level, N episodes with seeds S..S+N-1; E environments side by side, their
observations batched into one policy request per decision step. A policy step is one primitive; an
episode ends at success, failure, or the task's step budget. A `uio2` policy is a
`UIO2PrimitivePolicy` checkpoint (prompt_format "vima_primitive"); zero/random are baselines within the
primitive action bounds. The scripted oracle runs on the same seeds when eval.expert is true.

results.json is the tabletop schema (same keys; `per_task` keys are "L<level>/<task>", `vqa` null)
plus `suite`, `levels`, and
    per_level   {"L1": {success_rate, episodes, successes, ci95, expert: {...} | null}, ...}
and a `level` in every `episode_results` entry.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .config import AppConfig, ConfigError
from .evaluate import EpisodeResult, episode_entries, pooled, rate_row, results_record, task_entry, write_results
from .protocols import ArraySpec, Observation
from .stats import rate_summary

IMAGE_KEYS = ("image", "top_image")


def suite_module(suite: str):
    """The env package of a suite; VIMA-Bench's absence becomes a ConfigError with its install recipe."""
    if suite == "vima":
        import uio_robot.envs.vima as module

        return module
    from uio_robot.envs import vima_bench

    try:
        vima_bench.require_vima_bench()
    except vima_bench.VimaBenchMissing as exc:
        raise ConfigError(f"eval.suite=vima_bench: {exc}") from None
    return vima_bench


def action_spec(suite: str) -> ArraySpec:
    """The primitive action layout of a suite (pose0 x, y, yaw, pose1 x, y, yaw) with its bounds."""
    if suite == "vima":
        from uio_robot.envs.vima import env as module
    else:
        from uio_robot.envs.vima_bench import convert as module
    return ArraySpec(module.ACTION_NAMES, module.ACTION_LOW, module.ACTION_HIGH, module.ACTION_UNITS)


def level_tasks(suite: str, level: int, wanted: list[str]) -> list[str]:
    tasks = suite_module(suite).level_tasks(level)
    return [t for t in tasks if not wanted or t in wanted]


def make_env(suite: str, task: str, level: int, image_size: int):
    module = suite_module(suite)
    if suite == "vima":
        return module.VimaEnv(task, level=level, image_size=image_size)
    return module.VimaBenchEnv(task, level=level)


def build_vima_policy(cfg: AppConfig, spec: ArraySpec):
    """A primitive policy: a UIO2 primitive checkpoint, or a zero/random/replay baseline."""
    empty = ArraySpec((), np.zeros(0), np.zeros(0))
    if cfg.policy.kind == "uio2":
        import torch

        from uio_robot.policies.factory import resolve_checkpoint
        from uio_robot.policies.uio2_primitive_policy import UIO2PrimitivePolicy

        if cfg.policy.threads:
            torch.set_num_threads(cfg.policy.threads)
        policy = UIO2PrimitivePolicy(resolve_checkpoint(cfg.policy.checkpoint), device=cfg.policy.device,
                                     dtype=cfg.policy.dtype)
        policy.check_spec(spec, empty)
        return policy
    from uio_robot.policies.factory import build_policy

    return build_policy(cfg.policy.kind, spec, empty, checkpoint=cfg.policy.checkpoint, period=1.0, horizon=1,
                        seed=cfg.eval.seed)


def to_observation(raw: dict, step: int) -> Observation:
    """A VIMA-style env observation as the policy's `Observation` (interleaved prompt, no state)."""
    from uio_robot.envs.vima.prompt import observation_prompt

    images = {k: raw[k] for k in IMAGE_KEYS if k in raw}
    return Observation(images, np.zeros(0, np.float32), observation_prompt(raw), float(step))


def run_episodes(policy, envs: list, seeds: list[int], task: str, videos: int,
                 progress: tqdm | None = None) -> list[EpisodeResult]:
    """One episode per seed, `len(envs)` at a time; every decision step is one batched policy request."""
    results = [EpisodeResult(task, s) for s in seeds]
    todo = list(range(len(seeds)))
    running: dict[int, tuple[int, dict]] = {}  # env index -> (result index, last raw observation)

    def start(k: int) -> None:
        if not todo:
            running.pop(k, None)
            return
        i = todo.pop(0)
        raw, _ = envs[k].reset(seed=seeds[i])
        running[k] = (i, raw)
        if i < videos:
            results[i].frames.append(raw["image"])
        if hasattr(policy, "act_batch"):
            policy.reset(k)

    if not hasattr(policy, "act_batch"):
        policy.reset()
    for k in range(len(envs)):
        start(k)
    while running:
        active = list(running)
        observations = [to_observation(running[k][1], results[running[k][0]].steps) for k in active]
        if hasattr(policy, "act_batch"):
            chunks = policy.act_batch(observations, active)
        else:
            chunks = [policy.act(o) for o in observations]
        for k, chunk in zip(active, chunks):
            i, _ = running[k]
            env = envs[k]
            action = np.clip(chunk.actions[0], env.action_space.low, env.action_space.high)
            raw, _, terminated, truncated, info = env.step(action)
            results[i].steps += 1
            running[k] = (i, raw)
            if i < videos:
                results[i].frames.append(raw["image"])
            if terminated or truncated:
                results[i].success = bool(info.get("is_success", False))
                if progress is not None:
                    progress.update(1)
                start(k)
    return results


def oracle_summary(suite: str, task: str, level: int, seeds: list[int], image_size: int) -> dict:
    if suite == "vima":
        from uio_robot.envs.vima.expert_eval import evaluate_oracle

        report = evaluate_oracle(task, level, seeds, image_size=min(image_size, 64))
        return rate_summary(report.successes, report.episodes)
    env = make_env(suite, task, level, image_size)
    successes = 0
    try:
        for seed in seeds:
            obs, info = env.reset(seed=seed)
            oracle = env.expert()
            done = False
            while not done:
                obs, _, terminated, truncated, info = env.step(oracle.act(obs))
                done = terminated or truncated
            successes += bool(info["is_success"])
    finally:
        env.close()
    return rate_summary(successes, len(seeds))


def evaluate_vima(cfg: AppConfig, policy=None) -> dict:
    """Run the VIMA-style evaluation and write results.json / results.png / videos; returns the results."""
    suite = cfg.eval.suite
    started = time.monotonic()
    spec = action_spec(suite)
    levels = sorted(set(cfg.eval.levels))
    plan = [(lv, t) for lv in levels for t in level_tasks(suite, lv, list(cfg.eval.tasks))]
    if not plan:
        raise ConfigError(f"config eval.tasks={list(cfg.eval.tasks)}: no such task in levels {levels} of {suite}")
    if policy is None:
        policy = build_vima_policy(cfg, spec)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(cfg.eval.seed, cfg.eval.seed + cfg.eval.episodes))
    per_task, episodes = {}, []
    with tqdm(total=len(plan) * len(seeds), desc="episodes", unit="ep", file=sys.stderr) as bar:
        for level, task in plan:
            key = f"L{level}/{task}"
            bar.set_postfix_str(key)
            envs = [make_env(suite, task, level, cfg.env.image_size)
                    for _ in range(max(1, min(cfg.eval.num_envs, len(seeds))))]
            try:
                results = run_episodes(policy, envs, seeds, task, cfg.eval.videos, bar)
            finally:
                for env in envs:
                    env.close()
            episodes += episode_entries(results, out / "videos", f"L{level}_{task}", fps=1, level=level)
            expert = oracle_summary(suite, task, level, seeds, cfg.env.image_size) if cfg.eval.expert else None
            per_task[key] = task_entry(results, max(r.steps for r in results), expert)
    per_level = {}
    for level in levels:
        entries = [e for k, e in per_task.items() if k.split("/")[0] == f"L{level}"]
        if entries:
            per_level[f"L{level}"] = {**pooled(entries), "expert": pooled(e["expert"] for e in entries)}
    results = results_record(cfg, policy, seeds, episodes, per_task, vqa=None, replan_every=1, started=started,
                             head={"suite": suite, "levels": levels, "per_level": per_level})
    write_results(results, out, check=check_levels)
    return results


def check_levels(results: dict) -> None:
    """Raise ValueError when `per_level` does not add up to the per-task entries."""
    problems = []
    for name, entry in results["per_level"].items():
        tasks = [e for k, e in results["per_task"].items() if k.split("/")[0] == name]
        n = sum(e["episodes"] for e in tasks)
        s = sum(e["successes"] for e in tasks)
        if (entry.get("episodes"), entry.get("successes")) != (n, s):
            problems.append(f"per_level.{name}: {entry.get('successes')}/{entry.get('episodes')} but its tasks "
                            f"add up to {s}/{n}")
    if problems:
        raise ValueError("results.json does not match its schema: " + "; ".join(problems))


def format_vima_results(results: dict) -> str:
    lines = [f"{'level/task':<28} {'success':>8} {'95% CI':>17} {'expert':>8}"]
    lines += [rate_row(key, e, e["expert"], 28, 17) for key, e in results["per_task"].items()]
    lines += [rate_row(f"{level} (all tasks)", e, e["expert"], 28, 17) for level, e in results["per_level"].items()]
    return "\n".join(lines)
