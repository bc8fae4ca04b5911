"""Evaluation levels as data: `partitions/<train|L1..L4>.json` say which tasks a level has and which
shapes, colours and base kinds each task may use (VIMA's four levels: placement, combinatorial,
novel object, novel task). Loaded and checked here, so a typo in a file is an error naming it."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from .scene import BASE_BODIES, COLOURS, OBJECT_SHAPES
from .tasks import TASKS

PARTITION_DIR = Path(__file__).resolve().parent / "partitions"
LEVELS = (1, 2, 3, 4)
_KEYS = {"shapes": OBJECT_SHAPES, "distractor_shapes": OBJECT_SHAPES, "colours": tuple(COLOURS),
         "base_kinds": tuple(BASE_BODIES), "base_colours": tuple(COLOURS)}
_REQUIRED = {"VisualManipulation": ("shapes", "colours", "base_kinds", "base_colours"),
             "NovelNoun": ("shapes", "colours", "base_kinds", "base_colours"),
             "Rearrange": ("shapes", "colours"),
             "Push": ("shapes", "colours", "base_kinds", "base_colours"),
             "SameShape": ("shapes", "colours", "base_kinds", "base_colours"),
             "SameColour": ("shapes", "colours", "base_kinds", "base_colours")}


def partition_name(level: int | str) -> str:
    """"train" or "L1".."L4" from 1..4, "1".."4", "L1".."L4" or "train"."""
    text = str(level).strip()
    if text == "train":
        return text
    number = text[1:] if text[:1] in "Ll" else text
    if number.isdigit() and int(number) in LEVELS:
        return f"L{int(number)}"
    raise ValueError(f"VIMA level must be 1-4 (or 'train'), got {level!r}")


@cache
def _load(name: str, directory: str) -> dict:
    path = Path(directory) / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"VIMA partition file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    tasks = data.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise ValueError(f"{path}: 'tasks' must be a non-empty object")
    for task, spec in tasks.items():
        if task not in TASKS:
            raise ValueError(f"{path}: unknown task {task!r}; known: {sorted(TASKS)}")
        missing = [k for k in _REQUIRED[task] if k not in spec]
        unknown = [k for k in spec if k not in _KEYS]
        if missing or unknown:
            raise ValueError(f"{path}: task {task}: missing keys {missing}, unknown keys {unknown}")
        for key, values in spec.items():
            bad = [v for v in values if v not in _KEYS[key]] if isinstance(values, list) and values else [values]
            if bad:
                raise ValueError(f"{path}: task {task}: {key} has unknown or no values {bad}; "
                                 f"allowed: {list(_KEYS[key])}")
    return data


def load_partition(level: int | str, directory: str | Path = PARTITION_DIR) -> dict:
    """The partition of a level (1-4) or "train": {"level", "name", "description", "tasks": {task: spec}}."""
    return _load(partition_name(level), str(directory))


def level_tasks(level: int | str) -> list[str]:
    return list(load_partition(level)["tasks"])
