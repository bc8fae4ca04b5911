"""`TabletopEnv`: the gymnasium environment shared by all tabletop tasks.

One `step` is one control step of `control_dt` seconds (default 0.05 s, i.e. 20 Hz): the action moves
the end-effector target, differential IK turns it into joint targets, and the physics runs
`control_dt / timestep` substeps before the cameras render.

Action (float32[5], clipped to the Box bounds):
  0-2  dx, dy, dz   end-effector (grip point) displacement in metres, world frame, |.| <= 0.05
  3    dyaw         rotation about world z in radians, |.| <= 0.3 (the gripper always points down)
  4    gripper      -1 = fully open (8 cm between the pads), +1 = closed; values between interpolate
The new target is the measured grip pose plus the displacement, clipped to the workspace.

Observation (Dict):
  image        uint8 HxWx3, front camera (H = W = image_size, default 128)
  wrist_image  uint8 HxWx3, camera on the hand
  state        float32[12]: grip x, y, z (m, world), grip yaw (rad), gripper opening (m), 7 joint angles (rad)
  instruction  the task in words (a gymnasium Text space)
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from .controller import DiffIK
from .scene import (
    ARM_JOINTS,
    BIN_FOOTPRINT,
    BIN_INNER_HALF,
    BIN_RIM_Z,
    COLOURS,
    FINGER_JOINTS,
    FINGER_MAX,
    HOME_QPOS,
    PARK_Z,
    SCENE_XML,
    ZONE_FOOTPRINT,
    ZONE_HALF,
    ObjectSlot,
    load_model,
    object_slots,
    place_without_overlap,
    quat_yaw,
    yaw_of,
)
from .tasks import INSTRUCTION_CHARSET, INSTRUCTION_MAX_LEN, TASKS, Episode, Task

ACTION_NAMES = ("dx", "dy", "dz", "dyaw", "gripper")
ACTION_UNITS = ("m", "m", "m", "rad", "1")
ACTION_LOW = np.array([-0.05, -0.05, -0.05, -0.3, -1.0], dtype=np.float32)
ACTION_HIGH = -ACTION_LOW
STATE_NAMES = ("grip_x", "grip_y", "grip_z", "grip_yaw", "gripper_opening") + ARM_JOINTS
STATE_UNITS = ("m", "m", "m", "rad", "m") + ("rad",) * len(ARM_JOINTS)
IMAGE_KEYS = {"image": "front", "wrist_image": "wrist"}

# Where the grip point may be commanded (metres); the lower z bound keeps the fingertips off the table.
WORKSPACE_LOW = np.array([0.22, -0.42, 0.02])
WORKSPACE_HIGH = np.array([0.8, 0.42, 0.45])
MAX_YAW = np.pi / 2
START_POS = np.array([0.42, 0.0, 0.24])


class TabletopEnv(gym.Env):
    """A 7-joint arm with a parallel gripper at a table with coloured objects; see the module docstring."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    # Dimension names and units of the action and state vectors, read by adapters (e.g. GymRobot) so a
    # checkpoint's layout can be checked against real names.
    action_names, action_units = ACTION_NAMES, ACTION_UNITS
    state_names, state_units = STATE_NAMES, STATE_UNITS
    # Each displacement action moves the grip pose by (about) that much within one step: a runtime may
    # play a chunk of them as a path (uio_robot.agent.tracking).
    action_increments = {"dx": "grip_x", "dy": "grip_y", "dz": "grip_z", "dyaw": "grip_yaw"}
    angle_states = ("grip_yaw",)

    def __init__(
        self,
        task: str | Task = "PickPlace",
        image_size: int = 128,
        images: tuple[str, ...] = ("image", "wrist_image"),
        render_mode: str | None = None,
        render_size: int = 256,
        control_dt: float = 0.05,
        randomize: bool = False,
        shadows: bool = False,
        multisample: bool = False,
        scene_xml: str | os.PathLike = SCENE_XML,
    ):
        if isinstance(task, str):
            if task not in TASKS:
                raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}")
            task = TASKS[task]()
        self.task = task
        if not 16 <= int(image_size) <= 640:
            raise ValueError(f"image_size must be in [16, 640], got {image_size}")
        unknown = set(images) - set(IMAGE_KEYS)
        if unknown:
            raise ValueError(f"unknown image keys {sorted(unknown)}; known: {sorted(IMAGE_KEYS)}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.image_size = int(image_size)
        self.image_keys = tuple(images)
        self.render_mode = render_mode
        self.render_size = int(render_size)
        self.randomize = randomize

        self.model = load_model(scene_xml)
        self.data = mujoco.MjData(self.model)
        self.n_substeps = max(1, int(round(control_dt / self.model.opt.timestep)))
        self.control_dt = self.n_substeps * self.model.opt.timestep
        self.ik = DiffIK(self.model)
        self.slots = {s.name: s for s in object_slots(self.model)}
        m = self.model
        self._grip = m.site("grip").id
        self._arm_q = np.array([m.jnt_qposadr[m.joint(j).id] for j in ARM_JOINTS])
        self._finger_q = np.array([m.jnt_qposadr[m.joint(j).id] for j in FINGER_JOINTS])
        self._arm_u = np.array([m.actuator(j).id for j in ARM_JOINTS])
        self._finger_u = np.array([m.actuator(j).id for j in FINGER_JOINTS])
        self._finger_bodies = {m.body("left_finger").id, m.body("right_finger").id}
        self._bin_mocap = m.body_mocapid[m.body("bin").id]
        self._zone_mocap = m.body_mocapid[m.body("zone").id]
        self._front_cam = m.camera("front").id
        self._defaults = {
            "geom_rgba": m.geom_rgba.copy(),
            "cam_pos": m.cam_pos.copy(),
            "cam_quat": m.cam_quat.copy(),
            "light_diffuse": m.light_diffuse.copy(),
            "light_dir": m.light_dir.copy(),
        }
        m.vis.global_.offwidth = max(m.vis.global_.offwidth, self.image_size, self.render_size)
        m.vis.global_.offheight = max(m.vis.global_.offheight, self.image_size, self.render_size)
        if multisample:
            m.vis.quality.offsamples = 4
        if shadows:
            m.vis.quality.shadowsize = 2048
            m.light_castshadow[:] = 1
        self._shadows = shadows
        self._renderers: dict[int, mujoco.Renderer] = {}

        obs_spaces: dict[str, spaces.Space] = {
            k: spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8) for k in self.image_keys
        }
        joint_range = m.jnt_range[[m.joint(j).id for j in ARM_JOINTS]]
        state_low = np.concatenate([[-1.5, -1.5, -1.5, -np.pi, 0.0], joint_range[:, 0] - 0.2])
        state_high = np.concatenate([[1.5, 1.5, 1.5, np.pi, 2.5 * FINGER_MAX], joint_range[:, 1] + 0.2])
        obs_spaces["state"] = spaces.Box(state_low.astype(np.float32), state_high.astype(np.float32),
                                         dtype=np.float32)
        obs_spaces["instruction"] = spaces.Text(INSTRUCTION_MAX_LEN, min_length=1, charset=INSTRUCTION_CHARSET)
        self.observation_space = spaces.Dict(obs_spaces)
        self.action_space = spaces.Box(ACTION_LOW, ACTION_HIGH, dtype=np.float32)

        self.episode: Episode | None = None
        self.episode_id = 0
        self.seed_used: int | None = None
        self._q_des = HOME_QPOS.copy()

    # ----------------------------------------------------------------- privileged state (experts, VQA)
    def slot(self, name: str) -> ObjectSlot:
        return self.slots[name]

    def object_pos(self, name: str) -> np.ndarray:
        return self.data.xpos[self.slots[name].body_id].copy()

    def object_yaw(self, name: str) -> float:
        return quat_yaw(self.data.xquat[self.slots[name].body_id])

    def grip_pos(self) -> np.ndarray:
        return self.data.site_xpos[self._grip].copy()

    def grip_yaw(self) -> float:
        return yaw_of(self.data.site_xmat[self._grip])

    def gripper_opening(self) -> float:
        return float(self.data.qpos[self._finger_q].sum())

    def bin_pos(self) -> np.ndarray:
        return self.data.mocap_pos[self._bin_mocap].copy()

    def zone_pos(self) -> np.ndarray:
        return self.data.mocap_pos[self._zone_mocap].copy()

    def touching_gripper(self, name: str) -> bool:
        """Whether any finger is in contact with the object `name`."""
        body = self.slots[name].body_id
        d, m = self.data, self.model
        for i in range(d.ncon):
            b1, b2 = m.geom_bodyid[d.contact.geom1[i]], m.geom_bodyid[d.contact.geom2[i]]
            if (b1 == body and b2 in self._finger_bodies) or (b2 == body and b1 in self._finger_bodies):
                return True
        return False

    def scene_info(self) -> dict[str, Any]:
        """The episode's privileged scene state as plain Python data (for experts, VQA, logging).

        Positions are world metres (object centres), yaw radians; `camera` holds what is needed to
        project world points into the front image (see `vqa.project`).
        """
        if self.episode is None:
            raise RuntimeError("scene_info() before reset()")
        ep = self.episode
        objects = []
        for name, colour in ep.objects.items():
            slot = self.slots[name]
            objects.append({
                "name": name, "shape": slot.shape, "colour": colour,
                "description": f"{colour} {slot.shape}",
                "rgba": self.model.geom_rgba[slot.geom_id].tolist(),
                "half_extents": list(slot.half_extents),
                "position": self.object_pos(name).tolist(), "yaw": self.object_yaw(name),
            })
        m, d, cam = self.model, self.data, self._front_cam
        return {
            "task": self.task.name, "instruction": ep.instruction, "seed": self.seed_used,
            "target": ep.target, "support": ep.support, "objects": objects,
            "container": {"position": self.bin_pos().tolist(), "inner_half_size": BIN_INNER_HALF,
                          "rim_height": BIN_RIM_Z} if ep.use_bin else None,
            "zone": {"position": self.zone_pos().tolist(), "half_size": ZONE_HALF} if ep.use_zone else None,
            "grip": {"position": self.grip_pos().tolist(), "yaw": self.grip_yaw(),
                     "opening": self.gripper_opening()},
            "camera": {"position": d.cam_xpos[cam].tolist(), "xmat": d.cam_xmat[cam].tolist(),
                       "fovy_deg": float(m.cam_fovy[cam]), "width": self.image_size, "height": self.image_size},
        }

    # ------------------------------------------------------------------------------- gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.seed_used = int(seed)
        rng = self.np_random
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        self._restore_defaults()
        self.episode = self.task.sample(rng, list(self.slots))
        if options and options.get("max_objects"):
            self._keep_objects(int(options["max_objects"]))
        self.episode_id += 1
        self._lay_out(rng)
        if self.randomize:
            self._randomize_visuals(rng)

        start = START_POS + rng.uniform([-0.03, -0.05, -0.02], [0.03, 0.05, 0.02])
        q = self.ik.solve(HOME_QPOS, start, 0.0, iters=100, tol=1e-6)
        d.qpos[self._arm_q] = q
        d.qpos[self._finger_q] = FINGER_MAX
        self._q_des = q
        d.ctrl[self._arm_u] = q
        d.ctrl[self._finger_u] = FINGER_MAX
        mujoco.mj_forward(m, d)
        mujoco.mj_step(m, d, nstep=self.n_substeps)  # let contacts settle before the first image
        return self._observation(), {"is_success": False}

    def step(self, action):
        action = self._check_action(action)
        m, d = self.model, self.data
        target = np.clip(self.grip_pos() + action[:3], WORKSPACE_LOW, WORKSPACE_HIGH)
        yaw = float(np.clip(self.grip_yaw() + action[3], -MAX_YAW, MAX_YAW))
        self._q_des = self.ik.solve(self._q_des, target, yaw)
        d.ctrl[self._arm_u] = self._q_des
        d.ctrl[self._finger_u] = FINGER_MAX * (1.0 - action[4]) / 2.0
        mujoco.mj_step(m, d, nstep=self.n_substeps)
        success = self.task.success(self)
        return self._observation(), float(success), success, False, {"is_success": success}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return self._camera_image("front", self.render_size)

    def close(self):
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()

    # ----------------------------------------------------------------------------------- internals
    def _check_action(self, action) -> np.ndarray:
        try:
            a = np.asarray(action, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"action: cannot convert {type(action).__name__} to a float array: {exc}") from exc
        if a.shape != (len(ACTION_NAMES),):
            raise ValueError(f"action: expected shape ({len(ACTION_NAMES)},) = {ACTION_NAMES}, got {a.shape}")
        bad = ~np.isfinite(a)
        if bad.any():
            raise ValueError(f"action: non-finite values in {[ACTION_NAMES[i] for i in np.flatnonzero(bad)]}")
        return np.clip(a, ACTION_LOW, ACTION_HIGH)

    def _observation(self) -> dict[str, Any]:
        state = np.concatenate([
            self.grip_pos(), [self.grip_yaw(), self.gripper_opening()], self.data.qpos[self._arm_q],
        ]).astype(np.float32)
        obs: dict[str, Any] = {k: self._camera_image(IMAGE_KEYS[k], self.image_size) for k in self.image_keys}
        obs["state"] = state
        obs["instruction"] = self.episode.instruction
        return obs

    def _camera_image(self, camera: str, size: int) -> np.ndarray:
        r = self._renderers.get(size)
        if r is None:
            r = self._renderers[size] = mujoco.Renderer(self.model, size, size)
            r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = self._shadows
        r.update_scene(self.data, camera)
        return r.render()

    def _keep_objects(self, k: int) -> None:
        """Keep the episode's first `k` objects (the target first) and park the rest: simpler scenes for
        grounding data (VQA). A stack's support stays too; the instruction still names the episode's target."""
        if k < 1:
            raise ValueError(f"reset option max_objects must be >= 1, got {k}")
        ep = self.episode
        keep = list(ep.objects)[:k] + ([ep.support] if ep.support and ep.support not in list(ep.objects)[:k] else [])
        ep.objects = {name: ep.objects[name] for name in keep}

    def _lay_out(self, rng: np.random.Generator) -> None:
        """Park the pool, then place the box/zone and the episode's objects without overlap."""
        m, d, ep = self.model, self.data, self.episode
        for i, slot in enumerate(self.slots.values()):
            d.qpos[slot.qpos_adr:slot.qpos_adr + 7] = [-1.0, -0.6 + 0.15 * i, PARK_Z, 1, 0, 0, 0]
        fixtures = [(mocap, footprint) for used, mocap, footprint in
                    ((ep.use_bin, self._bin_mocap, BIN_FOOTPRINT), (ep.use_zone, self._zone_mocap, ZONE_FOOTPRINT))
                    if used]
        names = list(ep.objects)
        radius = {n: self.slots[n].radius for n in names}
        for _ in range(100):
            xys = place_without_overlap(rng, [f for _, f in fixtures] + [radius[n] for n in names])
            keys = ["bin" if mocap == self._bin_mocap else "zone" for mocap, _ in fixtures] + names
            if self.task.layout_ok(ep, dict(zip(keys, xys)), radius):
                break
        else:
            raise RuntimeError(f"{self.task.name}: no acceptable layout in 100 samples")
        d.mocap_pos[self._bin_mocap] = [-1.5, -1.5, PARK_Z - 0.02]
        d.mocap_pos[self._zone_mocap] = [-1.5, 1.5, PARK_Z - 0.02]
        for (mocap, _), xy in zip(fixtures, xys):
            d.mocap_pos[mocap] = [xy[0], xy[1], 0.0]
        xys = xys[len(fixtures):]
        for name, xy in zip(names, xys):
            slot = self.slots[name]
            yaw = rng.uniform(-np.pi / 4, np.pi / 4) if slot.shape == "cube" else 0.0
            d.qpos[slot.qpos_adr:slot.qpos_adr + 7] = [xy[0], xy[1], slot.half_height,
                                                       np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
            m.geom_rgba[slot.geom_id, :3] = COLOURS[ep.objects[name]]

    def _restore_defaults(self) -> None:
        for field, value in self._defaults.items():
            getattr(self.model, field)[:] = value

    def _randomize_visuals(self, rng: np.random.Generator) -> None:
        """Jitter colours, light and the front camera a little; the task's colour names stay right."""
        m = self.model
        for name in self.episode.objects:
            g = self.slots[name].geom_id
            m.geom_rgba[g, :3] = np.clip(m.geom_rgba[g, :3] + rng.uniform(-0.06, 0.06, 3), 0, 1)
        table = m.geom("table").id
        m.geom_rgba[table, :3] = np.clip(m.geom_rgba[table, :3] + rng.uniform(-0.08, 0.08, 3), 0, 1)
        m.light_diffuse[:] = np.clip(m.light_diffuse * rng.uniform(0.75, 1.25), 0, 1)
        m.light_dir[:] = m.light_dir + rng.uniform(-0.2, 0.2, m.light_dir.shape)
        cam = self._front_cam
        m.cam_pos[cam] += rng.uniform(-0.02, 0.02, 3)
        axis_angle = rng.uniform(-0.03, 0.03, 3)
        dq = np.zeros(4)
        mujoco.mju_axisAngle2Quat(dq, axis_angle / (np.linalg.norm(axis_angle) + 1e-12), np.linalg.norm(axis_angle))
        q = np.zeros(4)
        mujoco.mju_mulQuat(q, m.cam_quat[cam].copy(), dq)
        m.cam_quat[cam] = q

    def expert(self):
        """The scripted expert for this environment's task (see `experts.make_expert`)."""
        from .experts import make_expert

        return make_expert(self)
