"""`VimaBenchEnv`: an installed original VIMA-Bench environment behind a gymnasium interface.

VIMA-Bench (pybullet, gym 0.21 API) is imported only when an env is made from a task name, so this
module loads without it; a missing install raises `VimaBenchMissing` saying how to install it.

Observation (dict): `image` / `top_image` (front / top view, uint8 128x256x3), `segm_front` /
`segm_top` (uint8 masks of pybullet body ids), `ee` (0 suction, 1 spatula), `instruction` (VIMA-Bench's
prompt template, e.g. "Put the {dragged_obj_1} into the {base_obj}."), `prompt_assets` ({name: HxWx3
image}); `uio_robot.envs.vima.prompt.observation_prompt(obs)` gives the interleaved prompt parts.
Action: float[6] (pose0 x, y, yaw, pose1 x, y, yaw) in metres/radians, VIMA-Bench's frame.
`terminated` = VIMA-Bench's done (success or failure), `truncated` after the task's
`oracle_max_steps` steps (VIMA-Bench itself has no step limit); info has `is_success` and `failure`.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .convert import (
    ACTION_HIGH,
    ACTION_LOW,
    ACTION_NAMES,
    ACTION_UNITS,
    action_to_vector,
    convert_observation,
    prompt_images,
    vector_to_action,
)

PARTITIONS = {1: "placement_generalization", 2: "combinatorial_generalization",
              3: "novel_object_generalization", 4: "novel_task_generalization"}
INSTALL_HINT = (
    "VIMA-Bench is not installed. It is not on PyPI; install it from a checkout of its GitHub repository "
    "(vimalabs/VIMABench) into this environment: pip install 'setuptools==65.5.0' 'wheel==0.38.4'; "
    "pip install --no-build-isolation 'gym==0.21.0'; pip install --no-build-isolation --no-deps -e <checkout>; "
    "pip install pybullet==3.2.7 einops dm-tree psutil transforms3d av importlib_resources; "
    "pip install --no-deps kornia kornia_rs (see envs/vima/README.md, 'The original VIMA-Bench')."
)


class VimaBenchMissing(ImportError):
    """VIMA-Bench (`import vima_bench`) is not available."""


def require_vima_bench():
    """The `vima_bench` module, or `VimaBenchMissing` with the install recipe."""
    try:
        import vima_bench
    except ImportError as exc:
        raise VimaBenchMissing(f"{INSTALL_HINT} (import failed: {exc})") from exc
    return vima_bench


def level_tasks(level: int) -> list[str]:
    """The VIMA-Bench tasks of evaluation level 1-4 (from its own partition specs)."""
    vb = require_vima_bench()
    if level not in PARTITIONS:
        raise ValueError(f"VIMA-Bench level must be one of {sorted(PARTITIONS)}, got {level!r}")
    return sorted(vb.PARTITION_TO_SPECS["test"][PARTITIONS[level]])


def make_raw(task: str, level: int, seed: int | None = None):
    """A VIMA-Bench env for `task` with the level's partition spec, as VIMA-Bench's own scripts make it."""
    vb = require_vima_bench()
    if level not in PARTITIONS:
        raise ValueError(f"VIMA-Bench level must be one of {sorted(PARTITIONS)}, got {level!r}")
    specs = vb.PARTITION_TO_SPECS["test"][PARTITIONS[level]]
    if task not in specs:
        raise ValueError(f"VIMA-Bench task {task!r} is not in level {level} ({PARTITIONS[level]}); "
                         f"its tasks: {sorted(specs)}")
    return vb.make(task, task_kwargs=specs[task] or None, modalities=["rgb", "segm"], seed=seed,
                   display_debug_window=False, hide_arm_rgb=True, render_prompt=False)


class VimaBenchEnv(gym.Env):
    """See the module docstring. Pass `env=` to wrap an existing VIMA-Bench-interface env instead of
    making one (e.g. `recorded.ReplayVimaBenchEnv`)."""

    metadata = {"render_modes": []}
    action_names, action_units = ACTION_NAMES, ACTION_UNITS

    def __init__(self, task: str | None = None, level: int = 1, seed: int | None = None, env=None,
                 asset_view: str | None = None, max_steps: int | None = None):
        if env is None:
            if task is None:
                raise ValueError("VimaBenchEnv: give a task name or an env")
            env = make_raw(task, level, seed)
        self._env = env
        self.task_name, self.level = task, level
        self.asset_view = asset_view
        self.max_steps = max_steps
        image = spaces.Box(0, 255, (128, 256, 3), np.uint8)
        self.observation_space = spaces.Dict({
            "image": image, "top_image": image,
            "segm_front": spaces.Box(0, 255, (128, 256), np.uint8),
            "segm_top": spaces.Box(0, 255, (128, 256), np.uint8),
            "ee": spaces.Discrete(2),
            "instruction": spaces.Text(1024, min_length=1,
                                       charset="".join(chr(c) for c in range(32, 127))),
        })
        self.action_space = spaces.Box(ACTION_LOW.astype(np.float32), ACTION_HIGH.astype(np.float32),
                                       dtype=np.float32)
        self._raw = None
        self._prompt: tuple[str, dict] | None = None
        self._steps = 0

    @property
    def step_limit(self) -> int:
        return int(self.max_steps or self._env.task.oracle_max_steps)

    def _observation(self) -> dict:
        obs = convert_observation(self._raw)
        prompt, assets = self._prompt
        obs["instruction"] = prompt
        obs["prompt_assets"] = prompt_images(assets, self.asset_view)
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.seed(seed)
        self._raw = self._env.reset()
        self._prompt = self._env.get_prompt_and_assets()
        self._steps = 0
        return self._observation(), {"is_success": False, "failure": False}

    def step(self, action):
        if self._raw is None:
            raise RuntimeError("VimaBenchEnv: step() before reset()")
        self._raw, reward, done, info = self._env.step(vector_to_action(action), skip_oracle=False)
        self._steps += 1
        success = bool(info.get("success", False))
        out = {"is_success": success, "failure": bool(info.get("failure", False))}
        return self._observation(), float(reward), bool(done), self._steps >= self.step_limit, out

    def expert(self):
        """VIMA-Bench's scripted oracle, acting in this env's action format."""
        return _Oracle(self)

    def close(self):
        self._env.close()


class _Oracle:
    def __init__(self, env: VimaBenchEnv):
        self.env = env
        self._oracle = env._env.task.oracle(env._env)

    def act(self, obs) -> np.ndarray:
        action = self._oracle.act(self.env._raw)
        if action is None:
            raise RuntimeError("VIMA-Bench oracle: the object to pick is not visible (it returned None)")
        return action_to_vector(action).astype(np.float32)
