"""Structured configuration (Hydra): one root schema, overridable from the command line.

Each part of the system owns one dataclass here; `load_config(["loop.rate_hz=30", ...])` composes the
root with the user's overrides and validates values, so a bad value fails at start with its key named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, OmegaConf  # noqa: F401  (MISSING is for sub-configs that need a value)


class ConfigError(ValueError):
    """A configuration value that is out of range or inconsistent; the message names the key."""


@dataclass
class LoopConfig:
    rate_hz: float = 20.0  # control ticks per second
    max_ticks: int = 0  # 0 = until the episode ends
    replan_every: int = 4  # request a new chunk every N ticks
    temporal_ensemble: bool = False
    ensemble_decay: float = 0.5  # weight exp(-decay * age in steps) of overlapping chunks
    on_deadline: str = "continue"  # continue | hold | stop : what a late/failed/missing chunk leads to
    worker_timeout_s: float = 1.0  # a policy call without progress for this long = hung worker
    spin_s: float = 0.001  # busy-wait the last part of each tick's wait, for low jitter
    gil_switch_interval_s: float = 0.0005  # Python thread switch interval while the loop runs; 0 = keep
    pause_queries_near_tick: bool = True  # query decoding waits out each control tick (less jitter)


@dataclass
class SafetyConfig:
    enabled: bool = True  # False turns off shaping and staleness; e-stop and NaN rejection always apply
    clamp: bool = True  # clamp each dimension to the robot's action bounds
    max_rate: list[float] = field(default_factory=list)  # per-dimension max change per second; [] = off
    max_obs_age_s: float = 0.5  # staleness watchdog: older observations lead to the safe action
    safe_action: list[float] = field(default_factory=list)  # [] = the robot's own (zeros if it has none)
    workspace_low: list[float] = field(default_factory=list)  # end-effector position bounds; [] = off
    workspace_high: list[float] = field(default_factory=list)
    position_state_indices: list[int] = field(default_factory=list)  # where the EE position is in the state
    position_action_indices: list[int] = field(default_factory=list)  # the action's position part
    position_mode: str = "delta"  # absolute | delta (next = pos + delta_gain*a) | velocity (gain = period)
    delta_gain: float = 1.0


@dataclass
class EnvConfig:
    task: str = "uio_robot/PickPlace-v0"
    image_size: int = 128
    max_steps: int = 200
    seed: int = 0


@dataclass
class PolicyConfig:
    kind: str = "uio2"  # uio2 | zero | random | replay
    checkpoint: str = ""  # "" = the shipped default model
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16


@dataclass
class EvalConfig:
    episodes: int = 20
    seed: int = 100000  # first evaluation seed; training uses seeds below this
    tasks: list[str] = field(default_factory=list)  # [] = every task of the suite
    num_envs: int = 2
    videos: int = 2  # episodes per task saved as mp4 (the first ones)
    vqa_scenes: int = 20  # held-out scenes whose VQA pairs are asked; 0 = no VQA
    expert: bool = True  # also run the scripted expert on the same seeds


@dataclass
class AppConfig:
    loop: LoopConfig = field(default_factory=LoopConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out_dir: str = "outputs"


def _validate(cfg: AppConfig) -> None:
    checks: list[tuple[str, bool, str]] = [
        ("loop.rate_hz", 0 < cfg.loop.rate_hz <= 1000, "must be in (0, 1000]"),
        ("loop.replan_every", cfg.loop.replan_every >= 1, "must be >= 1"),
        ("loop.max_ticks", cfg.loop.max_ticks >= 0, "must be >= 0"),
        ("loop.on_deadline", cfg.loop.on_deadline in ("continue", "hold", "stop"), "must be continue|hold|stop"),
        ("loop.worker_timeout_s", cfg.loop.worker_timeout_s > 0, "must be > 0"),
        ("loop.ensemble_decay", cfg.loop.ensemble_decay >= 0, "must be >= 0"),
        ("loop.spin_s", 0 <= cfg.loop.spin_s and cfg.loop.spin_s * cfg.loop.rate_hz < 1, "must be in [0, period)"),
        ("loop.gil_switch_interval_s", 0 <= cfg.loop.gil_switch_interval_s <= 0.1, "must be in [0, 0.1]"),
        ("safety.max_obs_age_s", cfg.safety.max_obs_age_s > 0, "must be > 0"),
        ("safety.position_mode", cfg.safety.position_mode in ("absolute", "delta", "velocity"),
         "must be absolute|delta|velocity"),
        ("safety.delta_gain", cfg.safety.delta_gain > 0, "must be > 0"),
        ("env.image_size", 16 <= cfg.env.image_size <= 1024, "must be in [16, 1024]"),
        ("env.max_steps", cfg.env.max_steps >= 1, "must be >= 1"),
        ("policy.kind", cfg.policy.kind in ("uio2", "zero", "random", "replay"), "must be uio2|zero|random|replay"),
        ("policy.dtype", cfg.policy.dtype in ("auto", "float32", "bfloat16", "float16"), "unknown dtype"),
        ("eval.episodes", cfg.eval.episodes >= 1, "must be >= 1"),
        ("eval.num_envs", cfg.eval.num_envs >= 1, "must be >= 1"),
        ("eval.seed", cfg.eval.seed >= 0, "must be >= 0"),
        ("eval.videos", cfg.eval.videos >= 0, "must be >= 0"),
        ("eval.vqa_scenes", cfg.eval.vqa_scenes >= 0, "must be >= 0"),
    ]
    for key, ok, why in checks:
        if not ok:
            raise ConfigError(f"config {key}={OmegaConf.select(OmegaConf.structured(cfg), key)!r}: {why}")


def load_config(overrides: list[str] | None = None) -> AppConfig:
    """Compose the root config with Hydra-style overrides (`key=value`, `+key=value`)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    ConfigStore.instance().store(name="uio_robot", node=AppConfig)
    import tempfile

    with tempfile.TemporaryDirectory() as empty, initialize_config_dir(config_dir=empty, version_base="1.3"):
        try:
            node = compose(config_name="uio_robot", overrides=list(overrides or []))
        except (HydraException, OmegaConfBaseException) as exc:
            raise ConfigError(f"config: {exc}") from None
    cfg: Any = OmegaConf.to_object(node)
    _validate(cfg)
    return cfg
