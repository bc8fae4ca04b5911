"""The MuJoCo tabletop suite: gymnasium environments with camera images, language, experts and VQA truth.

Importing this package registers the tasks with gymnasium:

    import gymnasium as gym
    import uio_robot.envs
    env = gym.make("uio_robot/PickPlace-v0", image_size=128)

It also sets `MUJOCO_GL=egl` (offscreen rendering without a display) when `MUJOCO_GL` is unset,
before MuJoCo is imported. Envs know nothing of the model or the runtime.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

from gymnasium.envs.registration import register, registry  # noqa: E402

from .experts import Expert, make_expert  # noqa: E402
from .scene import COLOURS, SHAPES, SceneError  # noqa: E402
from .tabletop_env import (  # noqa: E402
    ACTION_NAMES,
    ACTION_UNITS,
    STATE_NAMES,
    STATE_UNITS,
    TabletopEnv,
)
from .tasks import TASKS  # noqa: E402

ENV_IDS = tuple(f"uio_robot/{name}-v0" for name in TASKS)

for _name, _task in TASKS.items():
    if f"uio_robot/{_name}-v0" not in registry:
        register(
            id=f"uio_robot/{_name}-v0",
            entry_point="uio_robot.envs.tabletop_env:TabletopEnv",
            kwargs={"task": _name},
            max_episode_steps=_task.max_episode_steps,
        )

__all__ = [
    "ACTION_NAMES", "ACTION_UNITS", "COLOURS", "ENV_IDS", "Expert", "SHAPES", "STATE_NAMES", "STATE_UNITS",
    "SceneError", "TASKS", "TabletopEnv", "make_expert",
]
