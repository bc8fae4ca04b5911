"""The five tabletop tasks: what an episode contains, how it is phrased, and when it has succeeded.

A task samples an `Episode` (which pool objects are on the table, their colours, the target, whether
the box or the zone is used, the instruction) from the environment's random generator, and judges
success from the simulator's privileged state through the environment (`TabletopEnv`).
Objects are referred to by "<colour> <shape>", e.g. "red cube".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .scene import BIN_INNER_HALF, BIN_RIM_Z, COLOURS, SHAPES, ZONE_HALF

if TYPE_CHECKING:
    from .tabletop_env import TabletopEnv

# Every instruction uses only these characters; the observation's Text space is built from them.
INSTRUCTION_CHARSET = "abcdefghijklmnopqrstuvwxyz0123456789 ,.'-"
INSTRUCTION_MAX_LEN = 96


@dataclass
class Episode:
    """What one episode is about. `objects` maps pool slot name -> colour name."""

    objects: dict[str, str]
    instruction: str
    target: str | None = None
    support: str | None = None  # the lower object of a stack
    use_bin: bool = False
    use_zone: bool = False
    extra: dict = field(default_factory=dict)


def describe(episode: Episode, slot: str) -> str:
    """The words for one object, e.g. "red cube"."""
    return f"{episode.objects[slot]} {slot.rsplit('_', 1)[0]}"


class Task:
    """Base class: subclasses set the name, step budget and templates, and implement sample/success."""

    name = ""
    max_episode_steps = 100
    templates: tuple[str, ...] = ()

    def sample(self, rng: np.random.Generator, pool: list[str]) -> Episode:
        raise NotImplementedError

    def success(self, env: TabletopEnv) -> bool:
        raise NotImplementedError

    def layout_ok(self, episode: Episode, xy: dict[str, np.ndarray], radius: dict[str, float]) -> bool:
        """Veto a sampled layout (`xy` holds object names and "bin"/"zone"); the env then resamples."""
        return True

    def phrase(self, rng: np.random.Generator, **words: str) -> str:
        return self.templates[int(rng.integers(len(self.templates)))].format(**words)


def _pick(rng: np.random.Generator, items: list) -> object:
    return items[int(rng.integers(len(items)))]


def _distinct_colours(rng: np.random.Generator, n: int) -> list[str]:
    names = list(COLOURS)
    return [names[i] for i in rng.choice(len(names), size=n, replace=False)]


def _slots_of(pool: list[str], shape: str) -> list[str]:
    return [s for s in pool if s.startswith(shape + "_")]


def _sample_objects(rng: np.random.Generator, pool: list[str], shapes: list[str]) -> list[str]:
    """One distinct pool slot per requested shape."""
    chosen: list[str] = []
    for shape in shapes:
        free = [s for s in _slots_of(pool, shape) if s not in chosen]
        free = free or [s for s in pool if s not in chosen]  # pool exhausted for that shape
        chosen.append(str(_pick(rng, free)))
    return chosen


class Reach(Task):
    """Bring the grip point just above the named object (within 3 cm of a point 4 cm over its top)."""

    name = "Reach"
    max_episode_steps = 40
    templates = (
        "reach the {obj}",
        "move the gripper to the {obj}",
        "go to the {obj}",
        "put the gripper above the {obj}",
    )

    def sample(self, rng, pool):
        shapes = [str(_pick(rng, list(SHAPES))) for _ in range(3)]
        slots = _sample_objects(rng, pool, shapes)
        ep = Episode(dict(zip(slots, _distinct_colours(rng, 3))), "", target=slots[0])
        ep.instruction = self.phrase(rng, obj=describe(ep, slots[0]))
        return ep

    @staticmethod
    def goal(env: TabletopEnv) -> np.ndarray:
        slot = env.slot(env.episode.target)
        return env.object_pos(slot.name) + np.array([0.0, 0.0, slot.half_height + 0.04])

    def success(self, env):
        return bool(np.linalg.norm(env.grip_pos() - self.goal(env)) < 0.03)


class ReachOne(Reach):
    """Reach with a single object on the table: the simplest visual task (find the one object, go there).

    Why: the first step of a grounding curriculum (find the one object before telling three apart by
    their names); see policies/assets/default/README.md for how far CPU training got.
    """

    name = "ReachOne"

    def sample(self, rng, pool):
        shape = str(_pick(rng, list(SHAPES)))
        slots = _sample_objects(rng, pool, [shape])
        ep = Episode(dict(zip(slots, _distinct_colours(rng, 1))), "", target=slots[0])
        ep.instruction = self.phrase(rng, obj=describe(ep, slots[0]))
        return ep


class Push(Task):
    """Push a cube or cylinder until its centre lies inside the white square (not lifted)."""

    name = "Push"
    max_episode_steps = 100
    templates = (
        "push the {obj} onto the white square",
        "slide the {obj} into the white zone",
        "push the {obj} to the target square",
        "move the {obj} onto the white square by pushing it",
    )

    def sample(self, rng, pool):
        shapes = [str(_pick(rng, ["cube", "cylinder"])), str(_pick(rng, list(SHAPES)))]
        slots = _sample_objects(rng, pool, shapes)
        ep = Episode(dict(zip(slots, _distinct_colours(rng, 2))), "", target=slots[0], use_zone=True)
        ep.instruction = self.phrase(rng, obj=describe(ep, slots[0]))
        return ep

    def layout_ok(self, episode, xy, radius):
        """Keep distractors out of the corridor the pushed object travels through."""
        start, end = xy[episode.target], xy["zone"]
        u = (end - start) / max(float(np.linalg.norm(end - start)), 1e-9)
        start = start - u * 0.08  # the pusher stands behind the object
        for name in episode.objects:
            if name == episode.target:
                continue
            t = np.clip((xy[name] - start) @ u, 0.0, float(np.linalg.norm(end - start)))
            if np.linalg.norm(start + t * u - xy[name]) < radius[name] + radius[episode.target] + 0.06:
                return False
        return True

    def success(self, env):
        slot = env.slot(env.episode.target)
        pos = env.object_pos(slot.name)
        off = np.abs(pos[:2] - env.zone_pos()[:2])
        on_table = pos[2] < slot.half_height + 0.01
        return bool(np.all(off < ZONE_HALF - 0.01) and on_table)


class PickPlace(Task):
    """Put the named object into the box and let go of it."""

    name = "PickPlace"
    max_episode_steps = 100
    templates = (
        "put the {obj} in the box",
        "pick up the {obj} and place it in the box",
        "place the {obj} into the container",
        "move the {obj} into the brown box",
    )

    def sample(self, rng, pool):
        shapes = [str(_pick(rng, list(SHAPES))) for _ in range(3)]
        slots = _sample_objects(rng, pool, shapes)
        ep = Episode(dict(zip(slots, _distinct_colours(rng, 3))), "", target=slots[0], use_bin=True)
        ep.instruction = self.phrase(rng, obj=describe(ep, slots[0]))
        return ep

    def success(self, env):
        name = env.episode.target
        pos = env.object_pos(name)
        off = np.abs(pos[:2] - env.bin_pos()[:2])
        inside = np.all(off < BIN_INNER_HALF) and pos[2] < BIN_RIM_Z
        return bool(inside and not env.touching_gripper(name))


class Stack(Task):
    """Put one cube (the top) on another (the support) and let go; the stack must stand."""

    name = "Stack"
    max_episode_steps = 100
    templates = (
        "stack the {top} on the {base}",
        "put the {top} on top of the {base}",
        "place the {top} onto the {base}",
        "pick up the {top} and stack it on the {base}",
    )

    def sample(self, rng, pool):
        cubes = _slots_of(pool, "cube")
        top, base = (str(s) for s in rng.choice(cubes, size=2, replace=False))
        other = _sample_objects(rng, [s for s in pool if not s.startswith("cube_")],
                                [str(_pick(rng, ["cylinder", "ball"]))])[0]
        slots = [top, base, other]
        ep = Episode(dict(zip(slots, _distinct_colours(rng, 3))), "", target=top, support=base)
        ep.instruction = self.phrase(rng, top=describe(ep, top), base=describe(ep, base))
        return ep

    def success(self, env):
        top, base = env.slot(env.episode.target), env.slot(env.episode.support)
        pt, pb = env.object_pos(top.name), env.object_pos(base.name)
        on_top = np.linalg.norm(pt[:2] - pb[:2]) < 0.8 * base.half_extents[0]
        height_ok = abs(pt[2] - pb[2] - top.half_height - base.half_height) < 0.01
        base_down = pb[2] < base.half_height + 0.005
        return bool(on_top and height_ok and base_down and not env.touching_gripper(top.name))


class PickByDescription(Task):
    """Lift the one object named by colour and shape among distractors sharing its colour or shape."""

    name = "PickByDescription"
    max_episode_steps = 80
    templates = (
        "pick up the {obj}",
        "lift the {obj}",
        "grab the {obj} and lift it",
        "find the {obj} and pick it up",
    )
    lift_height = 0.06

    def sample(self, rng, pool):
        shape, other_shape, third_shape = (str(s) for s in rng.permutation(list(SHAPES)))
        colour, other_colour, third_colour = _distinct_colours(rng, 3)
        # target, same shape other colour, same colour other shape, a fourth object of neither
        wanted = [(shape, colour), (shape, other_colour), (other_shape, colour), (third_shape, third_colour)]
        slots = _sample_objects(rng, pool, [s for s, _ in wanted])
        ep = Episode({s: c for s, (_, c) in zip(slots, wanted)}, "", target=slots[0])
        ep.instruction = self.phrase(rng, obj=describe(ep, slots[0]))
        return ep

    def success(self, env):
        target = env.slot(env.episode.target)
        lifted = env.object_pos(target.name)[2] > target.half_height + self.lift_height
        others_down = all(
            env.object_pos(s)[2] < env.slot(s).half_height + 0.02 for s in env.episode.objects if s != target.name
        )
        return bool(lifted and others_down and env.touching_gripper(target.name))


TASKS: dict[str, type[Task]] = {t.name: t for t in (Reach, ReachOne, Push, PickPlace, Stack, PickByDescription)}
