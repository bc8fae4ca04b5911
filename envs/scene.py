"""Loading the tabletop MJCF and describing what is in it: the object pool, colours, placement.

Everything here is about the scene itself, not about tasks: which objects exist (named `<shape>_<i>`),
their sizes, the colour palette, where the arm's joints are, and how to put objects on the table
without overlap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

ASSETS = Path(__file__).resolve().parent / "assets"
SCENE_XML = ASSETS / "tabletop.xml"

ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("finger_left", "finger_right")
# A posture with the gripper pointing down above the table; the IK start and its null-space target.
HOME_QPOS = np.array([0.0, 0.0, 0.0, -1.5708, 0.0, 1.5708, -0.7854])
FINGER_MAX = 0.04  # metres each finger travels; the opening between the pads is twice the joint value

SHAPES = ("cube", "cylinder", "ball")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.12),
    "green": (0.15, 0.68, 0.2),
    "blue": (0.12, 0.3, 0.88),
    "yellow": (0.95, 0.82, 0.1),
    "purple": (0.55, 0.2, 0.72),
    "orange": (1.0, 0.5, 0.05),
}

# Where objects, the box and the zone may be put (world x, y in metres); all of it is within reach.
TABLE_REGION = ((0.34, 0.68), (-0.27, 0.27))
PARK_Z = -0.73  # unused objects rest on the floor behind the robot, out of every camera's view
BIN_INNER_HALF = 0.073
BIN_RIM_Z = 0.058
BIN_FOOTPRINT = 0.12
ZONE_HALF = 0.05
ZONE_FOOTPRINT = 0.07

_REQUIRED = {
    "body": ("bin", "zone", "hand", "left_finger", "right_finger"),
    "site": ("grip",),
    "camera": ("front", "wrist"),
    "joint": ARM_JOINTS + FINGER_JOINTS,
    "actuator": ARM_JOINTS + FINGER_JOINTS,
}


class SceneError(ValueError):
    """A scene file that cannot be used: missing, malformed, or lacking a required element."""


def load_model(path: str | os.PathLike = SCENE_XML) -> mujoco.MjModel:
    """Compile an MJCF scene, turning any failure into a `SceneError` that names the file."""
    path = Path(path)
    if not path.is_file():
        raise SceneError(f"scene file not found: {path}")
    try:
        model = mujoco.MjModel.from_xml_path(str(path))
    except Exception as exc:  # mujoco raises ValueError with the parser's message
        raise SceneError(f"cannot load scene {path}: {exc}") from exc
    for kind, names in _REQUIRED.items():
        for name in names:
            if mujoco.mj_name2id(model, getattr(mujoco.mjtObj, f"mjOBJ_{kind.upper()}"), name) < 0:
                raise SceneError(f"scene {path} lacks the {kind} {name!r} that the tabletop suite needs")
    if not object_slots(model):
        raise SceneError(f"scene {path} has no objects (free bodies named cube_*, cylinder_*, ball_*)")
    return model


@dataclass(frozen=True)
class ObjectSlot:
    """One object of the pool. `half_extents` is the axis-aligned half size; `radius` its footprint."""

    name: str
    shape: str
    body_id: int
    geom_id: int
    qpos_adr: int
    qvel_adr: int
    half_extents: tuple[float, float, float]

    @property
    def half_height(self) -> float:
        return self.half_extents[2]

    @property
    def radius(self) -> float:
        return float(np.hypot(self.half_extents[0], self.half_extents[1]))


def object_slots(model: mujoco.MjModel) -> list[ObjectSlot]:
    """The pool of free-moving objects, in model order."""
    slots = []
    for b in range(model.nbody):
        name = model.body(b).name
        shape = name.rsplit("_", 1)[0]
        if shape not in SHAPES or model.body_jntnum[b] != 1:
            continue
        jnt = model.body_jntadr[b]
        geom = model.body_geomadr[b]
        size = model.geom_size[geom]
        if shape == "cube":
            half = (size[0], size[1], size[2])
        elif shape == "cylinder":
            half = (size[0], size[0], size[1])
        else:
            half = (size[0], size[0], size[0])
        slots.append(
            ObjectSlot(name, shape, b, geom, int(model.jnt_qposadr[jnt]), int(model.jnt_dofadr[jnt]),
                       tuple(float(h) for h in half))
        )
    return slots


def place_without_overlap(
    rng: np.random.Generator,
    radii: list[float],
    region: tuple[tuple[float, float], tuple[float, float]] = TABLE_REGION,
    gap: float = 0.03,
    tries: int = 60,
    restarts: int = 50,
) -> list[np.ndarray]:
    """Sample one xy per footprint radius so that no two footprints come within `gap` of each other.

    Footprints are placed in order by rejection sampling; when one does not fit, the whole layout
    starts again (a greedy layout can leave no room for the last one). Raises RuntimeError if no
    layout is found, which for the built-in tasks does not happen.
    """
    for _ in range(restarts):
        placed: list[tuple[np.ndarray, float]] = []
        for r in radii:
            for _ in range(tries):
                xy = np.array([rng.uniform(region[0][0] + r, region[0][1] - r),
                               rng.uniform(region[1][0] + r, region[1][1] - r)])
                if all(np.linalg.norm(xy - p) >= r + pr + gap for p, pr in placed):
                    placed.append((xy, r))
                    break
            else:
                break
        if len(placed) == len(radii):
            return [xy for xy, _ in placed]
    raise RuntimeError(f"no layout without overlap for footprints {radii} in region {region}")


def yaw_of(xmat: np.ndarray) -> float:
    """Rotation about world z of a frame's x axis (radians)."""
    m = np.asarray(xmat).reshape(3, 3)
    return float(np.arctan2(m[1, 0], m[0, 0]))


def quat_yaw(quat: np.ndarray) -> float:
    """Yaw of a (w, x, y, z) quaternion."""
    w, x, y, z = quat
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))
