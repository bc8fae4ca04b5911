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
    episodes: int = 0
    successes: int = 0
    steps: list[int] = field(default_factory=list)
    failed_seeds: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.successes / max(self.episodes, 1)


def evaluate_expert(task: str, seeds: Iterable[int], on_episode: Callable[[], None] | None = None) -> ExpertReport:
    """Success count of the expert for `task` on each seed, with the task's own step budget."""
    env = TabletopEnv(task, images=())
    expert = make_expert(env)
    report = ExpertReport(task)
    try:
        for seed in seeds:
            obs, info = env.reset(seed=seed)
            steps, terminated = 0, False
            while not terminated and steps < env.task.max_episode_steps:
                obs, _, terminated, _, info = env.step(expert.act(obs))
                steps += 1
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
