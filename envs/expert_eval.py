"""Run a task's scripted expert over many seeds and count successes (images off: the expert and the
success checks use privileged state only, so the numbers are the same with cameras on)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .experts import make_expert
from .tabletop_env import TabletopEnv


@dataclass
class ExpertReport:
    task: str
    level: str = ""  # VIMA-style tasks' evaluation level; "" for the tabletop suite
    episodes: int = 0
    successes: int = 0
    steps: list[int] = field(default_factory=list)
    failed_seeds: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.successes / max(self.episodes, 1)


def run_expert(env, expert, seeds: Iterable[int], report: ExpertReport, max_steps: int | None = None,
               on_episode: Callable[[], None] | None = None) -> ExpertReport:
    """Play `expert` in `env` once per seed until the episode ends (or `max_steps`), counting into `report`;
    closes the env. Shared by the tabletop suite and the VIMA-style tasks."""
    try:
        for seed in seeds:
            obs, info = env.reset(seed=seed)
            steps, done = 0, False
            while not done and (max_steps is None or steps < max_steps):
                obs, _, terminated, truncated, info = env.step(expert.act(obs))
                steps += 1
                done = terminated or truncated
            report.episodes += 1
            report.steps.append(steps)
            if info["is_success"]:
                report.successes += 1
            else:
                report.failed_seeds.append(seed)
            if on_episode is not None:
                on_episode()
    finally:
        env.close()
    return report


def evaluate_expert(task: str, seeds: Iterable[int], on_episode: Callable[[], None] | None = None) -> ExpertReport:
    """Success count of the expert for `task` on each seed, with the task's own step budget."""
    env = TabletopEnv(task, images=())
    return run_expert(env, make_expert(env), seeds, ExpertReport(task), env.task.max_episode_steps, on_episode)
