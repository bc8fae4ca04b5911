"""`PolicyRecipe`: how to build a policy, as plain picklable data, so another process can build it.

Why: with `loop.worker=process` the policy lives in a child process. Pickling a built policy would copy
its torch state through a pipe (slow, and not every model object pickles); a recipe instead names a
top-level callable (a policy class, or a factory such as `policies.factory.build_policy`) and its plain
arguments (specs, paths, numbers), and the child calls it. The thread worker accepts a recipe too and
builds it in-process, so a caller can pass the same recipe whichever worker the config picks.

`policy_recipe_from_config` is the one place that turns `policy.*` into factory arguments (rollout,
ros-agent, bench-loop); `describe_policy` reads what the runtime must know before the policy exists
(its chunk length, control period, checkpoint) from the checkpoint's metadata, without loading it.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .protocols import ArraySpec, Observation, Policy

if TYPE_CHECKING:
    from .config import AppConfig, PolicyConfig


@dataclass(frozen=True)
class PolicyRecipe:
    factory: Callable[..., Policy]  # importable by name in a fresh interpreter (module level)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Policy:
        return self.factory(**self.kwargs)

    def check_picklable(self) -> None:
        """Fail here, with the reason, rather than inside the child process's start-up."""
        try:
            pickle.dumps(self)
        except Exception as exc:
            name = getattr(self.factory, "__qualname__", repr(self.factory))
            raise TypeError(f"policy recipe for {name} cannot be sent to the inference process: {exc} "
                            f"(the factory must be a module-level callable, the arguments plain data)") from None

    def warmed(self, observation: Observation) -> PolicyRecipe:
        """This recipe followed by one `act(observation)` and a `reset()`, where the policy is built: the
        first call's one-time costs (allocations, lazy set-up) are paid before the loop times anything,
        and no state of the warm-up call is left for the episode."""
        return PolicyRecipe(_build_warmed, dict(recipe=self, observation=observation))


def _build_warmed(recipe: PolicyRecipe, observation: Observation) -> Policy:
    policy = recipe.build()
    policy.act(observation)
    policy.reset()
    return policy


def policy_recipe_from_config(cfg: AppConfig, action_spec: ArraySpec, state_spec: ArraySpec) -> PolicyRecipe:
    """The configured policy (`policy.*`) for a robot with these specs. Simple policies get chunks 2 steps
    longer than the replanning interval: a chunk starts at its observation's time (about a tick before
    the request) and arrives a tick later. A model's rows are `policy.period_s` apart (0: its own period)."""
    from uio_robot.policies.factory import build_policy

    p = cfg.policy
    return PolicyRecipe(build_policy, dict(
        kind=p.kind, action_spec=action_spec, state_spec=state_spec, checkpoint=p.checkpoint, device=p.device,
        dtype=p.dtype, threads=p.threads, period=1.0 / cfg.loop.rate_hz, horizon=cfg.loop.replan_every + 2,
        seed=cfg.env.seed, fast=p.fast,
        model_period=p.period_s or None))


@dataclass(frozen=True)
class PolicyFacts:
    """What the runtime needs to know about the configured policy before (or without) building it."""

    directory: Path | None = None  # the uio2 checkpoint directory
    chunk: int | None = None  # the model's fixed chunk length (None: the policy follows the loop)
    period: float | None = None  # the control period the model was trained at


def describe_policy(policy_cfg: PolicyConfig) -> PolicyFacts:
    """The facts for `policy_cfg`, read from the uio2 checkpoint's metadata (the same values the built
    policy uses). A directory that is no checkpoint gives no chunk or period here; building it then
    fails with the reason."""
    if policy_cfg.kind != "uio2":
        return PolicyFacts()
    from uio_robot.policies.factory import resolve_checkpoint
    from uio_robot.policies.uio2.checkpoint import read_metadata
    from uio_robot.policies.uio2_policy import DEFAULT_PERIOD_S

    directory = resolve_checkpoint(policy_cfg.checkpoint)
    meta = (read_metadata(directory) if directory.is_dir() else None) or {}
    fmt = meta.get("action_format")
    chunk = fmt.get("chunk") if isinstance(fmt, dict) else None
    return PolicyFacts(directory, int(chunk) if chunk else None,
                       float(meta.get("control_period_s") or DEFAULT_PERIOD_S))
