"""VQA ground truth from the privileged scene state (`TabletopEnv.scene_info()`).

Answers are short and canonical: a colour ("red"), a shape ("cube"), a count ("2"), "yes"/"no",
"left"/"right" and "in front"/"behind", or a location as normalized front-image coordinates
"u v" with two decimals (u from the left edge, v from the top edge, both in [0, 1]).
Left/right and in front/behind are as seen from the front camera: "in front" means closer to it.

The generator is a pure function of the scene state and a numpy Generator, so a seed gives the same
pairs every time. Seeds are split into train and held-out by `split_of` (every tenth seed is held out).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from .scene import COLOURS, SHAPES

HELDOUT_EVERY = 10
MIN_IMAGE_GAP = 0.04  # normalized image distance below which left/right is not asked
MIN_DEPTH_GAP = 0.03  # metres of camera depth below which in front/behind is not asked
PLURAL = {"cube": "cubes", "cylinder": "cylinders", "ball": "balls"}
MAX_COUNT = 9  # counts are answered as one digit
YES_NO = ("yes", "no")  # answers to exists
SIDES = ("left", "right")  # answers to left_right
DEPTHS = ("in front", "behind")  # answers to front_behind, "in front" = closer to the camera
# Every question form, by kind (count has three); `suite_vocabulary` fills them with every word.
QUESTIONS = {
    "colour": "what colour is the {shape}?",
    "shape": "what shape is the {colour} object?",
    "count": "how many objects are on the table?",
    "count_shape": "how many {shapes} are there?",
    "count_colour": "how many {colour} objects are there?",
    "exists": "is there {article} {description}?",
    "where": "where is the {description}?",
    "left_right": "is the {a} left or right of the {b}?",
    "front_behind": "is the {a} in front of or behind the {b}?",
}


def split_of(seed: int) -> str:
    """'heldout' for seeds divisible by `HELDOUT_EVERY`, else 'train' (a rule anyone can recompute)."""
    return "heldout" if int(seed) % HELDOUT_EVERY == 0 else "train"


def camera_coords(camera: dict[str, Any], point) -> np.ndarray:
    """A world point in the camera frame (x right, y up, z backwards: visible points have z < 0)."""
    rot = np.asarray(camera["xmat"], dtype=float).reshape(3, 3)
    return rot.T @ (np.asarray(point, dtype=float) - np.asarray(camera["position"], dtype=float))


def project(camera: dict[str, Any], point) -> tuple[float, float]:
    """Normalized image coordinates (u, v) of a world point in the front image (pinhole, fovy)."""
    x, y, z = camera_coords(camera, point)
    if z >= 0:
        raise ValueError(f"point {list(point)} is behind the camera")
    focal = 0.5 / np.tan(np.deg2rad(camera["fovy_deg"]) / 2)  # in image heights
    aspect = camera["width"] / camera["height"]
    u = 0.5 + focal * x / -z / aspect
    v = 0.5 - focal * y / -z
    return float(u), float(v)


def article(description: str) -> str:
    return "an" if description[0] in "aeiou" else "a"


def vqa_pairs(scene_info: dict[str, Any], rng: np.random.Generator, max_pairs: int | None = None) -> list[dict]:
    """Question/answer pairs about the objects on the table, shuffled by `rng`.

    Each pair is {"question", "answer", "kind"}; kinds: colour, shape, count, exists, left_right,
    front_behind, where.
    """
    objects = scene_info["objects"]
    camera = scene_info["camera"]
    shapes = Counter(o["shape"] for o in objects)
    colours = Counter(o["colour"] for o in objects)
    descriptions = Counter(o["description"] for o in objects)
    pairs: list[dict] = []

    def add(kind: str, question: str, answer: str) -> None:
        pairs.append({"question": question, "answer": answer, "kind": kind})

    for o in objects:
        if shapes[o["shape"]] == 1:
            add("colour", QUESTIONS["colour"].format(shape=o["shape"]), o["colour"])
        if colours[o["colour"]] == 1:
            add("shape", QUESTIONS["shape"].format(colour=o["colour"]), o["shape"])
    add("count", QUESTIONS["count"], str(len(objects)))
    for shape in SHAPES:
        add("count", QUESTIONS["count_shape"].format(shapes=PLURAL[shape]), str(shapes[shape]))
    for colour in sorted(colours):
        add("count", QUESTIONS["count_colour"].format(colour=colour), str(colours[colour]))
    present = sorted(descriptions)
    absent = [f"{c} {s}" for c in COLOURS for s in SHAPES if f"{c} {s}" not in descriptions]
    for answer, options in zip(YES_NO, (present, absent)):
        description = options[int(rng.integers(len(options)))]
        add("exists", QUESTIONS["exists"].format(article=article(description), description=description), answer)

    unique = [o for o in objects if descriptions[o["description"]] == 1]
    uv = {o["name"]: project(camera, o["position"]) for o in unique}
    depth = {o["name"]: -camera_coords(camera, o["position"])[2] for o in unique}
    for o in unique:
        u, v = uv[o["name"]]
        add("where", QUESTIONS["where"].format(description=o["description"]), f"{u:.2f} {v:.2f}")
    for a in unique:
        for b in unique:
            if a is b:
                continue
            du = uv[a["name"]][0] - uv[b["name"]][0]
            if abs(du) >= MIN_IMAGE_GAP:
                add("left_right", QUESTIONS["left_right"].format(a=a["description"], b=b["description"]),
                    SIDES[0] if du < 0 else SIDES[1])
            dz = depth[a["name"]] - depth[b["name"]]
            if abs(dz) >= MIN_DEPTH_GAP:
                add("front_behind", QUESTIONS["front_behind"].format(a=a["description"], b=b["description"]),
                    DEPTHS[0] if dz < 0 else DEPTHS[1])
    order = rng.permutation(len(pairs))
    pairs = [pairs[i] for i in order]
    return pairs if max_pairs is None else pairs[:max_pairs]


def episode_vqa(env, seed: int, max_pairs: int | None = None) -> dict[str, Any]:
    """Reset `env` with `seed` and return {"seed", "split", "scene", "pairs"} for that scene."""
    env.reset(seed=seed)
    scene = env.unwrapped.scene_info()
    pairs = vqa_pairs(scene, np.random.default_rng(seed), max_pairs)
    return {"seed": int(seed), "split": split_of(seed), "scene": scene, "pairs": pairs}
