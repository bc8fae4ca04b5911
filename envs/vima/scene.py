"""The VIMA-style scene: object and base kinds, colours, and a view of the MuJoCo model to place,
colour, render and query them.

Objects are free bodies named `<shape>_<i>` (training shapes cube/cylinder/ball, novel shapes cross/
block); bases are mocap bodies: two open boxes ("bin"), two flat squares ("pad"), two low square
frames ("frame"). Unused ones are parked out of every camera's view. Images are rendered with the arm
hidden (as VIMA-Bench renders its observations), from the front camera, a top-down camera, and the
"studio" where single objects are photographed for prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

SCENE_XML = Path(__file__).resolve().parent / "assets" / "vima_scene.xml"

# Colour names -> RGB. Two disjoint sets, as VIMA-Bench's two texture sets: in training (and L1) dragged
# objects take set A and bases set B; L2 swaps them.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.12),
    "green": (0.15, 0.68, 0.2),
    "yellow": (0.95, 0.82, 0.1),
    "cyan": (0.1, 0.8, 0.85),
    "blue": (0.12, 0.3, 0.88),
    "purple": (0.55, 0.2, 0.72),
    "orange": (1.0, 0.5, 0.05),
    "pink": (0.98, 0.5, 0.7),
    "gray": (0.55, 0.55, 0.55),  # the neutral colour of reference images (e.g. "same shape as")
}
OBJECT_SHAPES = ("cube", "cylinder", "ball", "cross", "block")
BASE_BODIES = {"bin": ("bin", "bin_1"), "pad": ("zone", "pad_1"), "frame": ("frame_0", "frame_1")}
# Half size of the area that counts as "in" a base, its footprint radius for layout, and the height
# below which an object counts as resting in it (metres).
BASE_INNER_HALF = {"bin": 0.073, "pad": 0.06, "frame": 0.065}
BASE_FOOTPRINT = {"bin": 0.12, "pad": 0.085, "frame": 0.11}
BASE_TOP = {"bin": 0.11, "pad": 0.09, "frame": 0.09}
# Where bases and objects are laid out (world x, y in metres): within the arm's reach and both cameras'
# views, larger than the tabletop suite's region so that two boxes and four objects fit.
TABLE_REGION = ((0.3, 0.72), (-0.3, 0.3))
STUDIO_XY = np.array([2.0, 2.0])
OBJECT_PARK = np.array([-1.3, 0.0, -0.72])
BASE_PARK_Z = -0.77
ON_TABLE_MIN_Z = -0.05  # below this an object has fallen off the table


@dataclass(frozen=True)
class Thing:
    """An object or base body of the pool and its kind (shape for objects, base kind for bases)."""

    name: str
    kind: str
    body: int
    geoms: tuple[int, ...]


def arm_geoms(model: mujoco.MjModel) -> list[int]:
    """Geoms of the arm and its hand (everything under `arm_base`)."""
    root = model.body("arm_base").id
    out = []
    for g in range(model.ngeom):
        b = model.geom_bodyid[g]
        while b not in (0, root):
            b = model.body_parentid[b]
        if b == root:
            out.append(g)
    return out


class VimaScene:
    """Bodies of the VIMA scene on a model/data pair (the tabletop env's)."""

    HIDDEN_GROUP = 5  # geom group the arm is moved to, switched off when rendering

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData):
        self.model, self.data = model, data
        self.objects: dict[str, Thing] = {}
        for b in range(model.nbody):
            name = model.body(b).name
            shape = name.rsplit("_", 1)[0]
            if shape in OBJECT_SHAPES and model.body_jntnum[b] == 1:
                geoms = tuple(range(model.body_geomadr[b], model.body_geomadr[b] + model.body_geomnum[b]))
                self.objects[name] = Thing(name, shape, b, geoms)
        self.bases: dict[str, Thing] = {}
        for kind, names in BASE_BODIES.items():
            for name in names:
                b = model.body(name).id
                geoms = tuple(range(model.body_geomadr[b], model.body_geomadr[b] + model.body_geomnum[b]))
                self.bases[name] = Thing(name, kind, b, geoms)
        self._finger_bodies = {model.body("left_finger").id, model.body("right_finger").id}
        for g in arm_geoms(model):
            model.geom_group[g] = self.HIDDEN_GROUP
        self._option = mujoco.MjvOption()
        self._option.geomgroup[self.HIDDEN_GROUP] = 0
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}

    # ---- placing and colouring ------------------------------------------------------------------------
    def _qadr(self, name: str) -> int:
        return int(self.model.jnt_qposadr[self.model.body_jntadr[self.objects[name].body]])

    def _dadr(self, name: str) -> int:
        return int(self.model.jnt_dofadr[self.model.body_jntadr[self.objects[name].body]])

    def half_height(self, name: str) -> float:
        g = self.objects[name].geoms[0]
        kind, size = self.objects[name].kind, self.model.geom_size[g]
        return float({"cube": size[2], "block": size[2], "cross": size[2], "cylinder": size[1],
                      "ball": size[0]}[kind])

    def radius(self, name: str) -> float:
        """Footprint radius of an object (for layouts without overlap)."""
        g = self.objects[name].geoms[0]
        kind, size = self.objects[name].kind, self.model.geom_size[g]
        return float(np.hypot(size[0], size[1]) if kind in ("cube", "block", "cross") else size[0])

    def set_object_pose(self, name: str, xy, yaw: float = 0.0, z: float | None = None) -> None:
        q = self._qadr(name)
        z = self.half_height(name) if z is None else z
        self.data.qpos[q:q + 7] = [xy[0], xy[1], z, np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
        v = self._dadr(name)
        self.data.qvel[v:v + 6] = 0.0

    def park_all(self) -> None:
        for i, name in enumerate(self.objects):
            self.set_object_pose(name, OBJECT_PARK[:2] + [0.0, 0.12 * i - 0.9], z=OBJECT_PARK[2])
        for i, name in enumerate(self.bases):
            self.set_base_xy(name, [-1.5, 0.4 * i - 1.0], z=BASE_PARK_Z)

    def set_base_xy(self, name: str, xy, z: float = 0.0) -> None:
        self.data.mocap_pos[self.model.body_mocapid[self.bases[name].body]] = [xy[0], xy[1], z]

    def colour(self, name: str, colour: str) -> None:
        thing = self.objects.get(name) or self.bases[name]
        for g in thing.geoms:
            self.model.geom_rgba[g, :3] = COLOURS[colour]

    # ---- state ----------------------------------------------------------------------------------------
    def object_pos(self, name: str) -> np.ndarray:
        return self.data.xpos[self.objects[name].body].copy()

    def object_yaw(self, name: str) -> float:
        w, x, y, z = self.data.xquat[self.objects[name].body]
        return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))

    def base_xy(self, name: str) -> np.ndarray:
        return self.data.mocap_pos[self.model.body_mocapid[self.bases[name].body]][:2].copy()

    def in_base(self, obj: str, base: str) -> bool:
        """Whether `obj` rests within `base`'s area, below its top, and is not held."""
        kind = self.bases[base].kind
        pos = self.object_pos(obj)
        inside = np.all(np.abs(pos[:2] - self.base_xy(base)) < BASE_INNER_HALF[kind])
        return bool(inside and pos[2] < BASE_TOP[kind] and not self.held(obj))

    def held(self, obj: str) -> bool:
        return self.objects[obj].body in self.held_bodies()

    def held_bodies(self) -> set[int]:
        """Bodies touching a finger."""
        m, d = self.model, self.data
        out = set()
        for i in range(d.ncon):
            b1, b2 = m.geom_bodyid[d.contact.geom1[i]], m.geom_bodyid[d.contact.geom2[i]]
            if b1 in self._finger_bodies and b2 not in self._finger_bodies:
                out.add(int(b2))
            elif b2 in self._finger_bodies and b1 not in self._finger_bodies:
                out.add(int(b1))
        return out

    def touching_down(self, held: set[int]) -> bool:
        """Whether a held body or a finger touches something other than the hand and what it holds."""
        m, d = self.model, self.data
        carried = held | self._finger_bodies
        for i in range(d.ncon):
            b1, b2 = m.geom_bodyid[d.contact.geom1[i]], m.geom_bodyid[d.contact.geom2[i]]
            if (b1 in carried) != (b2 in carried):
                return True
        return False

    # ---- rendering ------------------------------------------------------------------------------------
    def render(self, camera: str, size: int) -> np.ndarray:
        r = self._renderers.get((size, size))
        if r is None:
            r = self._renderers[(size, size)] = mujoco.Renderer(self.model, size, size)
        r.update_scene(self.data, camera, scene_option=self._option)
        return r.render()

    def studio_image(self, name: str, colour: str, size: int) -> np.ndarray:
        """A picture of one object or base alone on the studio plate, in `colour`; the scene is restored."""
        m, d = self.model, self.data
        qpos, mocap, rgba = d.qpos.copy(), d.mocap_pos.copy(), m.geom_rgba.copy()
        try:
            if name in self.objects:
                self.set_object_pose(name, STUDIO_XY, yaw=0.3)
            else:
                self.set_base_xy(name, STUDIO_XY)
            self.colour(name, colour)
            mujoco.mj_kinematics(m, d)
            return self.render("studio", size)
        finally:
            d.qpos[:], d.mocap_pos[:], m.geom_rgba[:] = qpos, mocap, rgba
            mujoco.mj_kinematics(m, d)

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()
