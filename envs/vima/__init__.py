"""VIMA-style multimodal-prompt tasks on the MuJoCo tabletop suite.

Importing this package registers one gymnasium id per task, `uio_robot/Vima<Task>-v0`:

    import gymnasium as gym
    import uio_robot.envs.vima
    env = gym.make("uio_robot/VimaVisualManipulation-v0", level=2)
    obs, info = env.reset(seed=0)
    parts = uio_robot.envs.vima.observation_prompt(obs)   # ["put the", <image>, "into the", <image>, "."]
    obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert().act(obs))

Levels (partition files in `partitions/`): "train", 1 placement, 2 combinatorial, 3 novel object,
4 novel task. Tasks: VisualManipulation, Rearrange, SameShape, Push (levels 1-3, train); NovelNoun,
SameColour (level 4 only). Push uses the push primitive, the others pick-and-place.
"""

from gymnasium.envs.registration import register, registry

from .env import ACTION_HIGH, ACTION_LOW, ACTION_NAMES, ACTION_UNITS, VimaEnv
from .partitions import LEVELS, level_tasks, load_partition
from .prompt import observation_prompt, prompt_parts
from .tasks import TASKS

ENV_IDS = tuple(f"uio_robot/Vima{name}-v0" for name in TASKS)

for _name in TASKS:
    if f"uio_robot/Vima{_name}-v0" not in registry:
        register(id=f"uio_robot/Vima{_name}-v0", entry_point="uio_robot.envs.vima.env:VimaEnv",
                 kwargs={"task": _name})

__all__ = [
    "ACTION_HIGH", "ACTION_LOW", "ACTION_NAMES", "ACTION_UNITS", "ENV_IDS", "LEVELS", "TASKS", "VimaEnv",
    "level_tasks", "load_partition", "observation_prompt", "prompt_parts",
]
