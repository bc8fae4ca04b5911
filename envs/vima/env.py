"""`VimaEnv`: VIMA-style multimodal-prompt tasks with primitive actions on the MuJoCo tabletop arm.

One `step` is one whole primitive (pick-and-place, or push for push tasks), executed by
`primitives.PrimitiveRunner` as ordinary tabletop control steps; images are rendered only after it
(the decision points), with the arm hidden, as VIMA-Bench renders its observations.

Action: float32[6] = pose0 (x, y, yaw), pose1 (x, y, yaw); metres in the world frame (origin at the
arm's base, x away from the robot, y to its left) and radians; clipped to the action space.
Observation (Dict):
  image         uint8 HxWx3 front camera      top_image  uint8 HxWx3 top-down camera
  ee            0 (the end effector: a parallel gripper standing in for VIMA's suction cup)
  instruction   the prompt template, e.g. "put the {dragged_obj} into the {base_obj}."
  prompt_assets {placeholder: uint8 HxWx3}: objects photographed alone, or the goal scene from the top
`prompt.observation_prompt(obs)` interleaves them into `Observation.instruction` parts.
`terminated` on success or failure (an object in a base it must not be in, or off the table);
`truncated` after the task's step budget; info: is_success, failure, control_steps.
"""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from uio_robot.envs.tabletop_env import TabletopEnv
from uio_robot.envs.tasks import Episode, Task

from .partitions import load_partition, partition_name
from .primitives import MAX_YAW, PrimitiveRunner
from .scene import SCENE_XML, VimaScene
from .tasks import TASKS, VimaEpisode

ACTION_NAMES = ("pose0_x", "pose0_y", "pose0_yaw", "pose1_x", "pose1_y", "pose1_yaw")
ACTION_UNITS = ("m", "m", "rad", "m", "m", "rad")
ACTION_LOW = np.array([0.25, -0.4, -MAX_YAW, 0.25, -0.4, -MAX_YAW], dtype=np.float32)
ACTION_HIGH = np.array([0.75, 0.4, MAX_YAW, 0.75, 0.4, MAX_YAW], dtype=np.float32)
INSTRUCTION_CHARSET = "abcdefghijklmnopqrstuvwxyz0123456789 ,.'-{}_"


class _Stage(Task):
    """The tabletop env's own task slot: an empty table (the VIMA tasks lay out their own objects)."""

    name = "VimaStage"

    def sample(self, rng, pool):
        return Episode({}, "vima")

    def success(self, env):
        return False


class VimaEnv(gym.Env):
    """See the module docstring. `level`: "train" (the default) or 1-4, chooses the partition spec."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}
    action_names, action_units = ACTION_NAMES, ACTION_UNITS

    def __init__(self, task: str = "VisualManipulation", level: int | str = "train", image_size: int = 128,
                 render_mode: str | None = None, render_size: int = 256):
        if task not in TASKS:
            raise ValueError(f"unknown VIMA task {task!r}; known: {sorted(TASKS)}")
        self.level = partition_name(level)
        partition = load_partition(self.level)
        if task not in partition["tasks"]:
            raise ValueError(f"VIMA task {task} is not part of level {self.level}; its tasks: "
                             f"{sorted(partition['tasks'])}")
        if not 16 <= int(image_size) <= 640:
            raise ValueError(f"image_size must be in [16, 640], got {image_size}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.task = TASKS[task]()
        self.spec_ = partition["tasks"][task]
        self.image_size, self.render_mode, self.render_size = int(image_size), render_mode, int(render_size)
        self.tabletop = TabletopEnv(_Stage(), images=(), scene_xml=SCENE_XML)
        self.model, self.data = self.tabletop.model, self.tabletop.data
        self.scene = VimaScene(self.model, self.data)
        self.runner = PrimitiveRunner(self.tabletop, self.scene)
        image = spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        probe = self.task.sample(np.random.default_rng(0), self.spec_, self.scene)
        self.observation_space = spaces.Dict({
            "image": image, "top_image": image, "ee": spaces.Discrete(2),
            "instruction": spaces.Text(256, min_length=1, charset=INSTRUCTION_CHARSET),
            "prompt_assets": spaces.Dict({name: image for name in probe.assets}),
        })
        self.action_space = spaces.Box(ACTION_LOW, ACTION_HIGH, dtype=np.float32)
        self.episode: VimaEpisode | None = None
        self.steps = 0
        self._obs: dict = {}
        self._prompt_assets: dict[str, np.ndarray] = {}

    # ---- gymnasium API --------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._obs, _ = self.tabletop.reset(seed=seed)
        self.scene.park_all()
        ep = self.episode = self.task.sample(self.np_random, self.spec_, self.scene)
        self.steps = 0
        for name, colour in {**ep.objects, **ep.bases}.items():
            self.scene.colour(name, colour)
        for name in ep.bases:
            self.scene.set_base_xy(name, ep.layout[name])
        for name in ep.objects:
            self.scene.set_object_pose(name, ep.layout[name], ep.yaws.get(name, 0.0))
        mujoco.mj_forward(self.model, self.data)
        self._prompt_assets = self._render_assets(ep)
        self._obs = self.runner.hold(self._obs, -1.0, 4)  # let the objects settle
        return self._observation(), self._info(False, False)

    def step(self, action):
        if self.episode is None:
            raise RuntimeError("VimaEnv: step() before reset()")
        action = self._check_action(action)
        before = self.runner.steps
        if self.task.primitive == "push":
            self._obs = self.runner.push(self._obs, action[:3], action[3:])
        else:
            self._obs = self.runner.pick_place(self._obs, action[:3], action[3:])
        self.steps += 1
        success, failure = self.task.success(self), self.task.failure(self)
        info = self._info(success, failure)
        info["control_steps"] = self.runner.steps - before
        truncated = self.steps >= self.episode.max_steps
        return self._observation(), float(success), bool(success or failure), bool(truncated), info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return self.scene.render("front", self.render_size)

    def close(self):
        self.scene.close()
        self.tabletop.close()

    # ---- privileged -----------------------------------------------------------------------------------
    def expert(self):
        """The task's scripted oracle: `act(obs)` -> the next primitive action."""
        return _Oracle(self)

    # ---- internals ------------------------------------------------------------------------------------
    def _info(self, success: bool, failure: bool) -> dict:
        return {"is_success": bool(success), "failure": bool(failure)}

    def _check_action(self, action) -> np.ndarray:
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"action: cannot convert {type(action).__name__} to a float array: {exc}") from exc
        if a.shape != (len(ACTION_NAMES),):
            raise ValueError(f"action: expected shape ({len(ACTION_NAMES)},) = {ACTION_NAMES}, got {a.shape}")
        if not np.all(np.isfinite(a)):
            bad = [ACTION_NAMES[i] for i in np.flatnonzero(~np.isfinite(a))]
            raise ValueError(f"action: non-finite values in {bad}")
        return np.clip(a, ACTION_LOW, ACTION_HIGH)

    def _render_assets(self, ep: VimaEpisode) -> dict[str, np.ndarray]:
        assets = {}
        for name, what in ep.assets.items():
            if what[0] == "thing":
                assets[name] = self.scene.studio_image(what[1], what[2], self.image_size)
            else:  # the goal scene: objects at their goal places, from the top
                qpos = self.data.qpos.copy()
                for obj, xy in ep.goal_at.items():
                    self.scene.set_object_pose(obj, xy, ep.yaws.get(obj, 0.0))
                mujoco.mj_kinematics(self.model, self.data)
                assets[name] = self.scene.render("top", self.image_size)
                self.data.qpos[:] = qpos
                mujoco.mj_forward(self.model, self.data)
        return assets

    def _observation(self) -> dict:
        return {"image": self.scene.render("front", self.image_size),
                "top_image": self.scene.render("top", self.image_size),
                "ee": 0, "instruction": self.episode.template,
                "prompt_assets": {k: v.copy() for k, v in self._prompt_assets.items()}}


class _Oracle:
    def __init__(self, env: VimaEnv):
        self.env = env

    def act(self, obs) -> np.ndarray:
        return self.env.task.oracle(self.env)
