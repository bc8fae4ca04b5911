"""The VIMA-style tasks: what an episode contains, its multimodal prompt, its goals, and its oracle.

Every task samples a `VimaEpisode` from the level's spec (which shapes, colours and base kinds it may
use; see `partitions`), lays it out on the table, and names its prompt images (`assets`). Goals are
"object in base" or "object at a place"; success is every goal met, failure is an object in a base
it must not be in, or off the table. The oracle (scripted expert) reads the simulator's state and
returns the next primitive action (pose0, pose1) for the first goal not yet met.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from uio_robot.envs.experts import grasp_yaw
from uio_robot.envs.scene import place_without_overlap

from .scene import BASE_BODIES, BASE_FOOTPRINT, ON_TABLE_MIN_Z, TABLE_REGION

if TYPE_CHECKING:
    from .env import VimaEnv

GOAL_TOLERANCE = 0.04  # metres: an object "at" its goal place
# Push geometry (metres): the closed hand comes down PUSH_BEHIND beyond the object's footprint radius and
# stops PUSH_CONTACT short of it (about the closed fingers' half width); the distractor keeps
# PUSH_CLEARANCE off the swept corridor; the start may lie PUSH_MARGIN outside the layout region.
PUSH_BEHIND = 0.03
PUSH_CONTACT = 0.012
PUSH_CLEARANCE = 0.03
PUSH_MARGIN = 0.03
PUSH_LAYOUT_TRIES = 50
NOVEL_NOUNS = ("dax", "blicket", "wug", "zup", "gazer", "tufa", "fep", "kiki")


@dataclass
class VimaEpisode:
    """One episode. `assets` maps a placeholder to ("thing", body, colour) or ("goal_scene",)."""

    template: str
    objects: dict[str, str]  # object body -> colour, on the table
    bases: dict[str, str]  # base body -> colour
    assets: dict[str, tuple]
    max_steps: int
    goal_in: dict[str, str] = field(default_factory=dict)  # object -> the base it must end in
    goal_at: dict[str, np.ndarray] = field(default_factory=dict)  # object -> xy it must end at
    keep_out: tuple[str, ...] = ()  # objects that must not end in any base
    layout: dict[str, np.ndarray] = field(default_factory=dict)  # body -> initial xy
    yaws: dict[str, float] = field(default_factory=dict)


def _pick(rng: np.random.Generator, items) -> str:
    items = list(items)
    if not items:
        raise ValueError("empty choice in a task spec")
    return str(items[int(rng.integers(len(items)))])


def _slot(rng, scene, shape: str, used: set[str]) -> str:
    free = [n for n, t in scene.objects.items() if t.kind == shape and n not in used]
    if not free:
        raise ValueError(f"the scene has no free {shape} left")
    name = _pick(rng, free)
    used.add(name)
    return name


def _base(rng, kind: str, used: set[str]) -> str:
    free = [n for n in BASE_BODIES[kind] if n not in used]
    if not free:
        raise ValueError(f"the scene has no free {kind} base left")
    name = _pick(rng, free)
    used.add(name)
    return name


def _free_shapes(scene, shapes, used: set[str]) -> list[str]:
    """The shapes of `shapes` that still have an unused object in the pool."""
    return [s for s in shapes if any(t.kind == s and n not in used for n, t in scene.objects.items())]


def _distinct(rng, shapes, colours, avoid: set[tuple[str, str]]) -> tuple[str, str]:
    """A (shape, colour) pair not in `avoid`."""
    pairs = [(s, c) for s in shapes for c in colours if (s, c) not in avoid]
    return pairs[int(rng.integers(len(pairs)))]


class VimaTask:
    """Base: subclasses sample episodes; the oracle and the checks are shared."""

    name = ""
    primitive = "pick_place"  # or "push"

    def sample(self, rng: np.random.Generator, spec: dict, scene) -> VimaEpisode:
        raise NotImplementedError

    # ---- layout ---------------------------------------------------------------------------------------
    @staticmethod
    def lay_out(rng, episode: VimaEpisode, scene, extra: list[float] | None = None) -> list[np.ndarray]:
        """Sample non-overlapping places for the bases and objects (plus `extra` footprints, returned)."""
        names = list(episode.bases) + list(episode.objects)
        radii = [BASE_FOOTPRINT[scene.bases[n].kind] for n in episode.bases]
        radii += [scene.radius(n) + 0.012 for n in episode.objects]
        xys = place_without_overlap(rng, radii + list(extra or []), region=TABLE_REGION, gap=0.02)
        episode.layout = dict(zip(names, xys))
        for n in episode.objects:
            kind = scene.objects[n].kind
            episode.yaws[n] = float(rng.uniform(-np.pi / 4, np.pi / 4)) if kind in ("cube", "block", "cross") else 0.0
        return xys[len(names):]

    # ---- checks ---------------------------------------------------------------------------------------
    def goal_met(self, env: VimaEnv, obj: str) -> bool:
        ep, scene = env.episode, env.scene
        if obj in ep.goal_in:
            return scene.in_base(obj, ep.goal_in[obj])
        pos = scene.object_pos(obj)
        resting = pos[2] < scene.half_height(obj) + 0.01 and not scene.held(obj)
        return bool(resting and np.linalg.norm(pos[:2] - ep.goal_at[obj]) < GOAL_TOLERANCE)

    def success(self, env: VimaEnv) -> bool:
        ep = env.episode
        return all(self.goal_met(env, o) for o in [*ep.goal_in, *ep.goal_at])

    def failure(self, env: VimaEnv) -> bool:
        ep, scene = env.episode, env.scene
        if any(scene.object_pos(o)[2] < ON_TABLE_MIN_Z for o in ep.objects):
            return True
        for obj in ep.objects:
            wrong = [b for b in ep.bases if b != ep.goal_in.get(obj)]
            if (obj in ep.keep_out or obj in ep.goal_in) and any(scene.in_base(obj, b) for b in wrong):
                return True
        return False

    # ---- oracle ---------------------------------------------------------------------------------------
    def oracle(self, env: VimaEnv) -> np.ndarray:
        """The next primitive: move the first object whose goal is not met to its goal."""
        ep, scene = env.episode, env.scene
        todo = [o for o in [*ep.goal_in, *ep.goal_at] if not self.goal_met(env, o)]
        if not todo:
            todo = [*ep.goal_in, *ep.goal_at][:1]
        obj = todo[0]
        pos = scene.object_pos(obj)
        kind = scene.objects[obj].kind
        yaw = grasp_yaw("cube", scene.object_yaw(obj)) if kind in ("cube", "block", "cross") else 0.0
        if obj in ep.goal_in:
            base = ep.goal_in[obj]
            already = [o for o in ep.goal_in if ep.goal_in[o] == base and scene.in_base(o, base)]
            offsets = ([0.0, 0.0], [0.0, 0.035], [0.0, -0.035])
            target = scene.base_xy(base) + offsets[min(len(already), 2)]
        else:
            target = ep.goal_at[obj]
        return np.array([pos[0], pos[1], yaw, target[0], target[1], yaw], dtype=np.float32)


class VisualManipulation(VimaTask):
    """"put the {dragged_obj} into the {base_obj}." with a distractor object and a distractor base."""

    name = "VisualManipulation"
    template = "put the {dragged_obj} into the {base_obj}."

    def _objects_and_bases(self, rng, spec, scene):
        used: set[str] = set()
        shape, colour = _pick(rng, spec["shapes"]), _pick(rng, spec["colours"])
        dragged = _slot(rng, scene, shape, used)
        d_shape, d_colour = _distinct(rng, _free_shapes(scene, spec["shapes"], used), spec["colours"],
                                      {(shape, colour)})
        distractor = _slot(rng, scene, d_shape, used)
        kind, base_colour = _pick(rng, spec["base_kinds"]), _pick(rng, spec["base_colours"])
        o_kind, o_colour = _distinct(rng, spec["base_kinds"], spec["base_colours"], {(kind, base_colour)})
        base, other = _base(rng, kind, used), _base(rng, o_kind, used)
        return (dragged, colour), (distractor, d_colour), (base, base_colour), (other, o_colour)

    def _episode(self, rng, spec, scene) -> VimaEpisode:
        """The episode before its layout: the object into the base, the distractor kept out of both bases."""
        (dragged, colour), (distractor, d_colour), (base, b_colour), (other, o_colour) = \
            self._objects_and_bases(rng, spec, scene)
        return VimaEpisode(self.template, {dragged: colour, distractor: d_colour}, {base: b_colour, other: o_colour},
                           {"dragged_obj": ("thing", dragged, colour), "base_obj": ("thing", base, b_colour)},
                           max_steps=3, goal_in={dragged: base}, keep_out=(distractor,))

    def sample(self, rng, spec, scene):
        ep = self._episode(rng, spec, scene)
        self.lay_out(rng, ep, scene)
        return ep


class Push(VisualManipulation):
    """"push the {dragged_obj} into the {base_obj}.": slide an object onto a flat zone with the closed hand.

    Bases are flat pads only (a push cannot lift an object over a bin's or frame's wall). Layouts are
    resampled until the straight push is clear: the hand can come down behind the object within reach,
    and the distractor object and the other zone lie off the swept corridor (an object that slips off
    the hand then stops on the plain table, and the next push corrects it)."""

    name = "Push"
    template = "push the {dragged_obj} into the {base_obj}."
    primitive = "push"

    def sample(self, rng, spec, scene):
        if set(spec["base_kinds"]) - {"pad"}:
            raise ValueError(f"Push: base_kinds must be [pad] (objects cannot be pushed over walls), "
                             f"got {spec['base_kinds']}")
        ep = self._episode(rng, spec, scene)
        (dragged, base), = ep.goal_in.items()
        (distractor,), (other,) = ep.keep_out, [b for b in ep.bases if b != base]
        for _ in range(PUSH_LAYOUT_TRIES):
            self.lay_out(rng, ep, scene)
            r = scene.radius(dragged)
            start, _ = push_poses(ep.layout[dragged], ep.layout[base], r)
            clear_of_object = _segment_distance(ep.layout[distractor], start, ep.layout[base]) > \
                r + scene.radius(distractor) + PUSH_CLEARANCE
            clear_of_zone = _segment_distance(ep.layout[other], start, ep.layout[base]) > r + BASE_FOOTPRINT["pad"]
            if _reachable(start) and clear_of_object and clear_of_zone:
                return ep
        raise ValueError(f"Push: no clear push layout in {PUSH_LAYOUT_TRIES} tries")

    def oracle(self, env: VimaEnv) -> np.ndarray:
        """Push the object from behind, along the line to the zone's centre, to stop with its centre there."""
        ep, scene = env.episode, env.scene
        obj = next(iter(ep.goal_in))
        start, end = push_poses(scene.object_pos(obj)[:2], scene.base_xy(ep.goal_in[obj]), scene.radius(obj))
        return np.array([start[0], start[1], 0.0, end[0], end[1], 0.0], dtype=np.float32)


def push_poses(obj_xy, target_xy, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Hand start (behind the object, clear of it) and end (the object's centre then on `target_xy`)."""
    obj_xy, target_xy = np.asarray(obj_xy, float)[:2], np.asarray(target_xy, float)[:2]
    direction = target_xy - obj_xy
    u = direction / max(float(np.linalg.norm(direction)), 1e-6)
    return obj_xy - u * (radius + PUSH_BEHIND), target_xy - u * (radius + PUSH_CONTACT)


def _reachable(xy) -> bool:
    (x0, x1), (y0, y1) = TABLE_REGION
    return bool(x0 - PUSH_MARGIN <= xy[0] <= x1 + PUSH_MARGIN and y0 - PUSH_MARGIN <= xy[1] <= y1 + PUSH_MARGIN)


def _segment_distance(p, a, b) -> float:
    p, a, b = (np.asarray(v, float)[:2] for v in (p, a, b))
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / max(float(np.dot(ab, ab)), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))


class NovelNoun(VisualManipulation):
    """"this is a dax {dragged_obj}. this is a wug {base_obj}. put the dax into the wug." (new words)."""

    name = "NovelNoun"

    def sample(self, rng, spec, scene):
        ep = super().sample(rng, spec, scene)
        noun_obj, noun_base = (str(w) for w in rng.choice(NOVEL_NOUNS, size=2, replace=False))
        first = f"this is a {noun_obj} {{dragged_obj}}."
        second = f"this is a {noun_base} {{base_obj}}."
        if rng.random() < 0.5:
            first, second = second, first
        ep.template = f"{first} {second} put the {noun_obj} into the {noun_base}."
        return ep


class Rearrange(VimaTask):
    """"rearrange to this {scene}.": two objects have new places in the goal image, one stays."""

    name = "Rearrange"
    template = "rearrange to this {scene}."

    def sample(self, rng, spec, scene):
        used: set[str] = set()
        pairs: set[tuple[str, str]] = set()
        objects = {}
        for _ in range(3):
            shape, colour = _distinct(rng, _free_shapes(scene, spec["shapes"], used), spec["colours"], pairs)
            pairs.add((shape, colour))
            objects[_slot(rng, scene, shape, used)] = colour
        ep = VimaEpisode(self.template, objects, {}, {"scene": ("goal_scene",)}, max_steps=4)
        names = list(objects)
        goals = self.lay_out(rng, ep, scene, extra=[scene.radius(n) + 0.012 for n in names[:2]])
        ep.goal_at = {names[0]: goals[0], names[1]: goals[1], names[2]: ep.layout[names[2]]}
        return ep


class SameProperty(VimaTask):
    """Put every object that shares the reference object's shape (or colour) into the base."""

    prop = "shape"

    def sample(self, rng, spec, scene):
        used: set[str] = set()
        shapes, colours = list(spec["shapes"]), list(spec["colours"])
        others_shapes = list(spec.get("distractor_shapes", shapes))
        if self.prop == "shape":
            key = _pick(rng, shapes)
            match = [(key, str(c)) for c in rng.choice(colours, size=2, replace=False)]
            rest = [s for s in others_shapes if s != key]
            other = [(_pick(rng, rest), _pick(rng, colours)) for _ in range(2)]
            reference = (key, "gray")
        else:
            key = _pick(rng, colours)
            match = [(str(s), key) for s in rng.choice(shapes, size=2, replace=len(shapes) < 2)]
            rest = [c for c in colours if c != key]
            other = [(_pick(rng, others_shapes), _pick(rng, rest)) for _ in range(2)]
            reference = ("", key)
        objects = {}
        for shape, colour in match:
            objects[_slot(rng, scene, shape, used)] = colour
        for shape, colour in other:  # a distractor shape whose pool is used up is replaced by a free one
            free = [s for s in _free_shapes(scene, others_shapes, used) if (s != key or self.prop != "shape")]
            objects[_slot(rng, scene, shape if shape in free else _pick(rng, free), used)] = colour
        names = list(objects)
        ref_slot = names[0]  # photographed alone in the reference colour, before it is put on the table
        if self.prop == "colour":  # show the colour on another shape when a free one exists
            spare = [n for n, t in scene.objects.items() if n not in used and t.kind in shapes]
            ref_slot = _pick(rng, spare) if spare else ref_slot
        base_kind = _pick(rng, spec["base_kinds"])
        base = _base(rng, base_kind, set())
        template = f"put all objects with the same {self.prop} as {{ref_obj}} into the {{base_obj}}."
        base_colour = _pick(rng, spec["base_colours"])
        ep = VimaEpisode(template, objects, {base: base_colour},
                         {"ref_obj": ("thing", ref_slot, reference[1]), "base_obj": ("thing", base, base_colour)},
                         max_steps=4, goal_in={names[0]: base, names[1]: base}, keep_out=tuple(names[2:]))
        self.lay_out(rng, ep, scene)
        return ep


class SameShape(SameProperty):
    name = "SameShape"
    prop = "shape"


class SameColour(SameProperty):
    name = "SameColour"
    prop = "colour"


TASKS: dict[str, type[VimaTask]] = {t.name: t for t in (VisualManipulation, Rearrange, SameShape, Push, NovelNoun,
                                                         SameColour)}
