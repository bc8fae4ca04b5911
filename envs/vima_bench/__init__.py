"""Adapter to the original VIMA-Bench (pybullet): conversions, recorded-episode replay and a gymnasium env.

The conversions (`convert`) and the recorded-episode reader (`recorded`) need numpy only; VIMA-Bench
itself is imported lazily by `VimaBenchEnv` / `make_raw`, which raise `VimaBenchMissing` with install
instructions where it is absent.
"""

from .convert import (
    ACTION_HIGH,
    ACTION_LOW,
    ACTION_NAMES,
    ACTION_UNITS,
    action_to_vector,
    convert_observation,
    convert_prompt,
    vector_to_action,
)
from .env import PARTITIONS, VimaBenchEnv, VimaBenchMissing, level_tasks, make_raw, require_vima_bench

__all__ = [
    "ACTION_HIGH", "ACTION_LOW", "ACTION_NAMES", "ACTION_UNITS", "PARTITIONS", "VimaBenchEnv", "VimaBenchMissing",
    "action_to_vector", "convert_observation", "convert_prompt", "level_tasks", "make_raw", "require_vima_bench",
    "vector_to_action",
]
