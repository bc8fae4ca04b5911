"""Conversions between VIMA-Bench's data structures and the project's (numpy only, no VIMA-Bench needed).

VIMA-Bench gives images channel-first (3, 128, 256), prompts as a template with `{name}` placeholders
plus `prompt_assets`, and takes a dict action of two planar poses with xyzw quaternions. The project
uses HxWx3 images, interleaved prompt parts, and a flat primitive action in robot units:

    (pose0_x, pose0_y, pose0_yaw, pose1_x, pose1_y, pose1_yaw)   metres, metres, radians (x2)

Only yaw is kept from the quaternions: every VIMA-Bench task is planar (the recorded oracle actions
have x = y = 0 in all their quaternions), so a yaw loses nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from uio_robot.envs.vima.prompt import prompt_parts

VIEWS = ("front", "top")
ACTION_KEYS = ("pose0_position", "pose0_rotation", "pose1_position", "pose1_rotation")
ACTION_NAMES = ("pose0_x", "pose0_y", "pose0_yaw", "pose1_x", "pose1_y", "pose1_yaw")
ACTION_UNITS = ("m", "m", "rad", "m", "m", "rad")
POSITION_LOW = np.array([0.25, -0.5])  # VIMA-Bench's action_space bounds of pose*_position
POSITION_HIGH = np.array([0.75, 0.5])
ACTION_LOW = np.array([*POSITION_LOW, -np.pi, *POSITION_LOW, -np.pi])
ACTION_HIGH = np.array([*POSITION_HIGH, np.pi, *POSITION_HIGH, np.pi])
# Which rendered view of a prompt asset becomes the prompt image: single objects are seen best from the
# front, whole scenes (goal layouts, video frames) from the top.
DEFAULT_ASSET_VIEW = {"object": "front", "scene": "top"}


def chw_to_hwc(image: np.ndarray, name: str) -> np.ndarray:
    """A VIMA-Bench (3, H, W) uint8 image as (H, W, 3)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"{name}: expected a uint8 (3, H, W) image, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image.transpose(1, 2, 0))


def convert_observation(obs: Mapping) -> dict:
    """VIMA-Bench obs {"rgb": {view: CHW}, "segm"?: {view: HxW}, "ee": int} -> the project's keys.

    `image` is the front view, `top_image` the top view (both HxWx3), `segm_front`/`segm_top` the
    uint8 masks (pybullet body ids) when the env was made with the "segm" modality, `ee` the end
    effector (0 suction, 1 spatula).
    """
    missing = [k for k in ("rgb", "ee") if k not in obs]
    if missing:
        raise ValueError(f"VIMA-Bench observation lacks {missing}; it has {sorted(obs)}")
    rgb = obs["rgb"]
    absent = [v for v in VIEWS if v not in rgb]
    if absent:
        raise ValueError(f"VIMA-Bench observation: rgb views {absent} missing; it has {sorted(rgb)}")
    out = {"image": chw_to_hwc(rgb["front"], "rgb.front"), "top_image": chw_to_hwc(rgb["top"], "rgb.top"),
           "ee": int(obs["ee"])}
    for view, mask in (obs.get("segm") or {}).items():
        if view not in VIEWS:
            continue
        mask = np.asarray(mask)
        if mask.dtype != np.uint8 or mask.ndim != 2:
            raise ValueError(f"segm.{view}: expected a uint8 (H, W) mask, got {mask.dtype} {mask.shape}")
        out[f"segm_{view}"] = mask
    return out


def prompt_images(prompt_assets: Mapping, view: str | None = None) -> dict[str, np.ndarray]:
    """One HxWx3 image per placeholder: the asset's `view` rendering, or by its placeholder type."""
    images = {}
    for name, asset in prompt_assets.items():
        kind = asset.get("placeholder_type", "object")
        chosen = view or DEFAULT_ASSET_VIEW.get(kind, "front")
        rgb = asset.get("rgb", {})
        if chosen not in rgb:
            raise ValueError(f"prompt asset {name!r}: no {chosen!r} rgb view (has {sorted(rgb)})")
        images[name] = chw_to_hwc(rgb[chosen], f"prompt_assets.{name}.rgb.{chosen}")
    return images


def convert_prompt(prompt: str, prompt_assets: Mapping, view: str | None = None) -> list[str | np.ndarray]:
    """VIMA-Bench's prompt and assets -> interleaved text and image parts (an `Observation.instruction`)."""
    return prompt_parts(prompt, prompt_images(prompt_assets, view))


def quat_to_yaw(q_xyzw: np.ndarray) -> float:
    """Yaw of an xyzw quaternion (pybullet order)."""
    x, y, z, w = (float(v) for v in q_xyzw)
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


def yaw_to_quat(yaw: float) -> np.ndarray:
    """The xyzw quaternion of a rotation about z, with w >= 0."""
    q = np.array([0.0, 0.0, np.sin(yaw / 2.0), np.cos(yaw / 2.0)])
    return q if q[3] >= 0 else -q


def action_to_vector(action: Mapping) -> np.ndarray:
    """A VIMA-Bench action dict -> float64[6] (pose0 x, y, yaw, pose1 x, y, yaw)."""
    keys = set(action)
    if keys != set(ACTION_KEYS):
        raise ValueError(f"VIMA-Bench action: expected keys {list(ACTION_KEYS)}, missing "
                         f"{sorted(set(ACTION_KEYS) - keys)}, unknown {sorted(keys - set(ACTION_KEYS))}")
    out = []
    for pose in ("pose0", "pose1"):
        pos = np.asarray(action[f"{pose}_position"], dtype=np.float64).reshape(-1)
        rot = np.asarray(action[f"{pose}_rotation"], dtype=np.float64).reshape(-1)
        if pos.shape != (2,) or rot.shape != (4,):
            raise ValueError(f"VIMA-Bench action: {pose}_position must have 2 values and {pose}_rotation 4, got "
                             f"{pos.shape} and {rot.shape}")
        if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(rot))):
            raise ValueError(f"VIMA-Bench action: non-finite values in {pose}")
        out += [pos[0], pos[1], quat_to_yaw(rot)]
    return np.array(out)


def vector_to_action(vector: np.ndarray) -> dict[str, np.ndarray]:
    """float[6] -> the VIMA-Bench action dict: float32 arrays (its Box check rejects float64), positions
    clipped to the action space."""
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    if v.shape != (6,):
        raise ValueError(f"primitive action: expected 6 values {ACTION_NAMES}, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        bad = [ACTION_NAMES[i] for i in np.flatnonzero(~np.isfinite(v))]
        raise ValueError(f"primitive action: non-finite values in {bad}")
    action = {}
    for i, pose in enumerate(("pose0", "pose1")):
        x, y, yaw = v[3 * i:3 * i + 3]
        action[f"{pose}_position"] = np.clip([x, y], POSITION_LOW, POSITION_HIGH).astype(np.float32)
        action[f"{pose}_rotation"] = yaw_to_quat(yaw).astype(np.float32)
    return action
