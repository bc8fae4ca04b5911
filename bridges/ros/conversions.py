"""Pure conversions between ROS 2 messages and numpy, with validation (no node, no executor).

Inputs are checked before they can reach the runtime: a message that cannot be converted raises
`BadMessage` whose text names the topic's problem (wrong encoding, wrong size, truncated data, NaN, a
missing joint). cv_bridge is not needed: images are decoded with numpy (raw) or OpenCV (compressed).

Commands: the policy's action vector becomes an output vector by a `CommandMapping`
(slot j = scale[j] * action[index[j]], named names[j]); that vector is sent as one of
`std_msgs/Float64MultiArray`, `geometry_msgs/TwistStamped` or `trajectory_msgs/JointTrajectory`, and the
inverse functions read it back (the sim robot node executes commands with them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import TwistStamped
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from uio_robot.policies.types import InvalidObservation

# encoding -> (channels, how to get RGB from the channels)
ENCODINGS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
TWIST_FIELDS = ("linear.x", "linear.y", "linear.z", "angular.x", "angular.y", "angular.z")


class BadMessage(InvalidObservation):
    """A message that cannot be used; the text says why (and so the runtime logs it as the reason)."""


# ---- time ----------------------------------------------------------------------------------------------
def to_time(seconds: float) -> Time:
    sec = math.floor(seconds)
    return Time(sec=int(sec), nanosec=int(round((seconds - sec) * 1e9)) % 1_000_000_000)


def to_seconds(stamp: Time | Duration) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def to_duration(seconds: float) -> Duration:
    sec = math.floor(seconds)
    return Duration(sec=int(sec), nanosec=int(round((seconds - sec) * 1e9)) % 1_000_000_000)


# ---- images --------------------------------------------------------------------------------------------
def _check_size(what: str, h: int, w: int, expected_hw: tuple[int, int] | None) -> None:
    if expected_hw is not None and (expected_hw[0] > 0 and h != expected_hw[0] or expected_hw[1] > 0 and
                                    w != expected_hw[1]):
        raise BadMessage(f"{what}: image is {h}x{w}, expected {expected_hw[0]}x{expected_hw[1]}")


def image_to_array(msg: Image, expected_hw: tuple[int, int] | None = None, what: str = "image") -> np.ndarray:
    """A `sensor_msgs/Image` as uint8 HxWx3 RGB (a copy). Row padding (`step` > width * channels) is honoured."""
    channels = ENCODINGS.get(msg.encoding)
    if channels is None:
        raise BadMessage(f"{what}: unsupported encoding {msg.encoding!r}; supported: {sorted(ENCODINGS)}")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h < 1 or w < 1:
        raise BadMessage(f"{what}: empty image ({h}x{w})")
    if step < w * channels:
        raise BadMessage(f"{what}: step {step} is shorter than a row ({w} px x {channels} bytes)")
    data = np.frombuffer(msg.data, np.uint8)
    if data.size < step * h:
        raise BadMessage(f"{what}: {data.size} bytes of data, expected {step * h} ({h} rows of {step})")
    _check_size(what, h, w, expected_hw)
    pixels = data[: step * h].reshape(h, step)[:, : w * channels].reshape(h, w, channels)
    if msg.encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    if msg.encoding.startswith("bgr"):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    return np.ascontiguousarray(pixels[:, :, :3])


def compressed_to_array(msg: CompressedImage, expected_hw: tuple[int, int] | None = None,
                        what: str = "image") -> np.ndarray:
    """A `sensor_msgs/CompressedImage` (jpeg/png) as uint8 HxWx3 RGB."""
    data = np.frombuffer(msg.data, np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise BadMessage(f"{what}: could not decode {data.size} bytes of compressed image (format {msg.format!r})")
    _check_size(what, bgr.shape[0], bgr.shape[1], expected_hw)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def array_to_image(rgb: np.ndarray, stamp: Time | None = None, frame_id: str = "",
                   encoding: str = "rgb8") -> Image:
    """uint8 HxWx3 RGB -> `sensor_msgs/Image` in `encoding` (rgb8, bgr8, rgba8, bgra8, mono8)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"array_to_image: expected uint8 HxWx3, got {rgb.dtype} {rgb.shape}")
    if encoding not in ENCODINGS:
        raise ValueError(f"array_to_image: unsupported encoding {encoding!r}")
    if encoding == "mono8":
        pixels = rgb.mean(axis=2).astype(np.uint8)[:, :, None]
    else:
        pixels = rgb[:, :, ::-1] if encoding.startswith("bgr") else rgb
        if ENCODINGS[encoding] == 4:
            pixels = np.concatenate([pixels, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, is_bigendian=0,
                step=rgb.shape[1] * ENCODINGS[encoding])
    msg.data = np.ascontiguousarray(pixels).tobytes()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


def array_to_compressed(rgb: np.ndarray, stamp: Time | None = None, frame_id: str = "",
                        fmt: str = "jpeg", quality: int = 90) -> CompressedImage:
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", np.ascontiguousarray(rgb[:, :, ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else [])
    if not ok:
        raise ValueError(f"array_to_compressed: OpenCV could not encode {rgb.shape} as {fmt}")
    msg = CompressedImage(format=fmt)
    msg.data = buf.tobytes()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


# ---- joint states --------------------------------------------------------------------------------------
def joint_state_values(msg: JointState, required: Sequence[str], what: str = "joint_states") -> dict[str, float]:
    """The positions of the `required` names in a JointState, by name (order in the message is free)."""
    names, positions = list(msg.name), np.asarray(msg.position, np.float64)
    if positions.size != len(names):
        raise BadMessage(f"{what}: {len(names)} names but {positions.size} positions")
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in required if n not in index]
    if missing:
        raise BadMessage(f"{what}: missing joints {missing}")
    values = {n: float(positions[index[n]]) for n in required}
    bad = [n for n, v in values.items() if not math.isfinite(v)]
    if bad:
        raise BadMessage(f"{what}: non-finite position for {bad}")
    return values


def make_joint_state(names: Sequence[str], positions: Sequence[float], stamp: Time | None = None) -> JointState:
    msg = JointState(name=list(names), position=[float(p) for p in positions])
    if stamp is not None:
        msg.header.stamp = stamp
    return msg


# ---- commands ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CommandMapping:
    """Output slot j = scale[j] * action[index[j]], sent under names[j]."""

    names: tuple[str, ...]
    index: tuple[int, ...]
    scale: tuple[float, ...]
    action_dim: int

    @classmethod
    def create(cls, names: Sequence[str], action_dim: int, index: Sequence[int] = (),
               scale: Sequence[float] = ()) -> CommandMapping:
        index = tuple(index) if index else tuple(range(len(names)))
        scale = tuple(float(s) for s in scale) if scale else (1.0,) * len(names)
        if not (len(names) == len(index) == len(scale)):
            raise ValueError(f"command mapping: {len(names)} names, {len(index)} indices, {len(scale)} scales")
        if any(not 0 <= i < action_dim for i in index):
            raise ValueError(f"command mapping: indices {list(index)} outside the {action_dim} action dims")
        if any(s == 0 or not math.isfinite(s) for s in scale):
            raise ValueError(f"command mapping: scales must be finite and non-zero, got {list(scale)}")
        return cls(tuple(names), index, scale, action_dim)

    def to_values(self, action: np.ndarray) -> np.ndarray:
        action = np.asarray(action, np.float64).reshape(-1)
        if action.size != self.action_dim:
            raise ValueError(f"command mapping: action has {action.size} dims, expected {self.action_dim}")
        return np.asarray(self.scale) * action[list(self.index)]

    def to_action(self, values: dict[str, float], fill: np.ndarray) -> np.ndarray:
        """Inverse: an action vector from named output values; dims no slot carries keep `fill`."""
        action = np.array(fill, np.float32, copy=True)
        for name, i, s in zip(self.names, self.index, self.scale):
            if name in values:
                action[i] = values[name] / s
        return action


def float64_array(values: np.ndarray, names: Sequence[str]) -> Float64MultiArray:
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=",".join(names), size=len(values), stride=len(values))]
    msg.data = [float(v) for v in values]
    return msg


def twist(values: np.ndarray, names: Sequence[str], stamp: Time, frame_id: str) -> TwistStamped:
    """The slots named like twist fields (linear.x ... angular.z); other slots are not part of a twist."""
    msg = TwistStamped()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    for name, value in zip(names, values):
        if name in TWIST_FIELDS:
            part, axis = name.split(".")
            setattr(getattr(msg.twist, part), axis, float(value))
    return msg


def joint_trajectory(values: np.ndarray, names: Sequence[str], stamp: Time, reach_in_s: float) -> JointTrajectory:
    """One point with the slot values as positions, to be reached `reach_in_s` after the stamp."""
    msg = JointTrajectory(joint_names=list(names))
    msg.header.stamp = stamp
    msg.points = [JointTrajectoryPoint(positions=[float(v) for v in values], time_from_start=to_duration(reach_in_s))]
    return msg


def _finite(what: str, values: dict[str, float]) -> dict[str, float]:
    bad = [n for n, v in values.items() if not math.isfinite(v)]
    if bad:
        raise BadMessage(f"{what}: non-finite values for {bad}")
    return values


def values_from_float64_array(msg: Float64MultiArray, names: Sequence[str], what: str = "command") -> dict[str, float]:
    if len(msg.data) != len(names):
        raise BadMessage(f"{what}: {len(msg.data)} values, expected {len(names)} ({list(names)})")
    return _finite(what, dict(zip(names, (float(v) for v in msg.data))))


def values_from_twist(msg: TwistStamped, names: Sequence[str], what: str = "command") -> dict[str, float]:
    values = {}
    for name in names:
        if name in TWIST_FIELDS:
            part, axis = name.split(".")
            values[name] = float(getattr(getattr(msg.twist, part), axis))
    return _finite(what, values)


def values_from_joint_trajectory(msg: JointTrajectory, names: Sequence[str],
                                 what: str = "command") -> dict[str, float] | None:
    """The first point's positions by joint name; None for an empty trajectory (the stop request)."""
    if not msg.points:
        return None
    positions = list(msg.points[0].positions)
    if len(positions) != len(msg.joint_names):
        raise BadMessage(f"{what}: {len(msg.joint_names)} joint names but {len(positions)} positions")
    index = {n: i for i, n in enumerate(msg.joint_names)}
    return _finite(what, {n: float(positions[index[n]]) for n in names if n in index})
