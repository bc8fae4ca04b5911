"""VIMA-style primitive demonstrations on disk, and the UIO2 examples made from them.

On-disk format (version 1), one directory:

    index.json                    {"format": "uio_robot.vima_demos", "version": 1, "action_names",
                                   "action_low", "action_high", "camera", "image_size",
                                   "episodes": [{"file", "task", "level", "seed", "steps", "success",
                                                 "template"}]}
    episodes/<Task>-<level>-<seed>.npz
                                  `observation` uint8 [T, H, W, 3] (the camera before each primitive),
                                  `action` float32 [T, 6], the interleaved prompt as `prompt_images`
                                  uint8 [K, H, W, 3] and `prompt_texts` str [K + 1] (the words before
                                  each image, then after the last), `template`, `task`, `level` (str),
                                  `seed` (int), `success` (bool)

Files are written to a temporary name and renamed, then the index replaced, so an interrupted
recording keeps every earlier episode and resumes by skipping what the index lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from uio_robot.policies.codec import Codec
from uio_robot.policies.dataset import INDEX, DatasetError, IndexedWriter, SharedIndex, atomic_save_npz, read_json_index
from uio_robot.policies.prompts import location_text
from uio_robot.policies.uio2.preprocess import preprocess_example
from uio_robot.policies.vima_prompts import multimodal_prompt, primitive_target

FORMAT, VERSION = "uio_robot.vima_demos", 1


class VimaDemoWriter(IndexedWriter):
    """Adds episodes to a VIMA demo directory and lists them in index.json (several recorders may share
    a directory: `SharedIndex`)."""

    def __init__(self, root: str | Path, action_names: Sequence[str], action_low, action_high, camera: str,
                 image_size: int):
        self.root = Path(root)
        header = {"format": FORMAT, "version": VERSION, "action_names": list(action_names),
                  "action_low": [float(v) for v in action_low], "action_high": [float(v) for v in action_high],
                  "camera": camera, "image_size": int(image_size)}
        self._index = SharedIndex(self.root, header, ("episodes",), read_index,
                                  key=lambda kind, e: (e["task"], str(e["level"]), e["seed"]))

    def has(self, task: str, level: str, seed: int) -> bool:
        return (task, str(level), int(seed)) in self._index

    def add(self, task: str, level: str, seed: int, template: str, parts: Sequence, observations: np.ndarray,
            actions: np.ndarray, success: bool) -> Path:
        """One episode; `parts` is the interleaved prompt (str and uint8 HxWx3 images, in order)."""
        texts, images = split_parts(parts)
        if len(observations) != len(actions):
            raise DatasetError(f"episode {task}-{seed}: {len(actions)} actions but {len(observations)} observations")
        file = f"episodes/{task}-{level}-{seed}.npz"
        atomic_save_npz(self.root / file, {
            "observation": np.asarray(observations, np.uint8), "action": np.asarray(actions, np.float32),
            "prompt_images": np.stack(images).astype(np.uint8) if images else np.zeros((0, 1, 1, 3), np.uint8),
            "prompt_texts": np.array(texts, dtype=np.str_), "template": np.array(template),
            "task": np.array(task), "level": np.array(str(level)), "seed": np.array(int(seed)),
            "success": np.array(bool(success))})
        self._index.append("episodes", {"file": file, "task": task, "level": str(level), "seed": int(seed),
                                        "steps": len(actions), "success": bool(success), "template": template})
        return self.root / file


def split_parts(parts: Sequence) -> tuple[list[str], list[np.ndarray]]:
    """Interleaved parts -> (K + 1 text segments, K images)."""
    texts, images = [""], []
    for part in parts:
        if isinstance(part, str):
            texts[-1] = " ".join([texts[-1], part]).strip()
        else:
            images.append(np.asarray(part))
            texts.append("")
    return texts, images


def join_parts(texts: Sequence[str], images: Sequence[np.ndarray]) -> list:
    """The inverse of `split_parts`."""
    parts: list = []
    for i, text in enumerate(texts):
        if text:
            parts.append(str(text))
        if i < len(images):
            parts.append(images[i])
    return parts


def read_index(root: str | Path) -> dict:
    return read_json_index(Path(root) / INDEX, FORMAT, VERSION, "uio-robot record-vima")


@dataclass
class VimaEpisode:
    task: str
    seed: int
    template: str
    parts: list  # the interleaved prompt
    observation: np.ndarray
    action: np.ndarray


def load_episodes(root: str | Path, tasks: Sequence[str] = ()) -> tuple[dict, list[VimaEpisode]]:
    """The index and its successful episodes (of `tasks`, all when empty)."""
    root = Path(root)
    index = read_index(root)
    out = []
    for entry in index["episodes"]:
        if not entry["success"] or (tasks and entry["task"] not in tasks):
            continue
        path = root / entry["file"]
        try:
            with np.load(path, allow_pickle=False) as z:
                parts = join_parts(z["prompt_texts"].tolist(), list(z["prompt_images"]))
                out.append(VimaEpisode(str(z["task"]), int(z["seed"]), str(z["template"]), parts,
                                       z["observation"], z["action"]))
        except (OSError, KeyError, ValueError) as exc:
            raise DatasetError(f"{path}: cannot read episode ({exc})") from None
    return index, out


class PrimitiveExamples(Dataset):
    """One UIO2 example per decision step: multimodal prompt + camera image -> six location tokens."""

    def __init__(self, episodes: Sequence[VimaEpisode], tokenizer, codec: Codec, image_size: int,
                 history_size: int, num_frames: int, max_text_len: int):
        self.episodes, self.tokenizer, self.codec = list(episodes), tokenizer, codec
        self.sizes = (image_size, history_size, num_frames, max_text_len)
        self.items = [(e, t) for e, ep in enumerate(self.episodes) for t in range(len(ep.action))]
        self._cache: dict[int, dict[str, np.ndarray]] = {}  # preprocessing costs more than a small model's step

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict[str, np.ndarray]:
        if idx not in self._cache:
            self._cache[idx] = self._example(idx)
        return self._cache[idx]

    def _example(self, idx: int) -> dict[str, np.ndarray]:
        e, t = self.items[idx]
        ep = self.episodes[e]
        image_size, history_size, num_frames, max_text_len = self.sizes
        parts, target = self._prompt_and_target(ep, t)
        text, images = multimodal_prompt(parts, num_frames)
        return preprocess_example(self.tokenizer, text, image=ep.observation[t], image_history=images or None,
                                  text_targets=target, num_frames=num_frames, image_size=image_size,
                                  history_size=history_size, max_text_len=max_text_len)

    def _prompt_and_target(self, ep: VimaEpisode, t: int) -> tuple[list, str]:
        return ep.parts, primitive_target(self.codec, ep.action[t])


# Templates whose first prompt image is the object the first primitive picks up, at the pick pose (pose0
# x, y = the object's centre). Push is left out: its pose0 is the hand's start behind the object.
WHERE_TEMPLATES = ("put the {dragged_obj} into the {base_obj}.",)
WHERE_QUESTION = ("where is", "?")  # "where is <image_history_1> ?"


def where_question(image: np.ndarray) -> list:
    """"where is <image> ?" as interleaved prompt parts."""
    before, after = WHERE_QUESTION
    return [before, image, after]


def where_parts(ep: VimaEpisode) -> list:
    """The grounding question about the episode's picked object (its first prompt image)."""
    return where_question(next(p for p in ep.parts if not isinstance(p, str)))


def where_target(codec: Codec, action: np.ndarray) -> str:
    """The pick's x, y location tokens: the first two of the primitive target, same codec and bins."""
    return location_text(codec.encode_actions(np.asarray(action, np.float64).reshape(1, -1))[:2])


class WhereExamples(PrimitiveExamples):
    """One grounding example per suitable episode: "where is <image_history_1> ?" with the picked
    object's prompt image, on the episode's first frame -> the two location tokens of the oracle's pick
    x, y. Why: the primitive targets alone never taught the network to find a prompt image in the scene
    (it picks the prompted one of two objects at chance), the default model learned grounding from
    "where is" questions first."""

    def __init__(self, episodes: Sequence[VimaEpisode], tokenizer, codec: Codec, image_size: int,
                 history_size: int, num_frames: int, max_text_len: int):
        super().__init__([ep for ep in episodes if ep.template in WHERE_TEMPLATES], tokenizer, codec, image_size,
                         history_size, num_frames, max_text_len)
        self.items = [(e, 0) for e in range(len(self.episodes))]

    def _prompt_and_target(self, ep: VimaEpisode, t: int) -> tuple[list, str]:
        return where_parts(ep), where_target(self.codec, ep.action[t])


def prompt_texts(episodes: Sequence[VimaEpisode]) -> list[str]:
    """The words of the prompts (images taken out), for training a tokenizer."""
    return sorted({" ".join(p for p in ep.parts if isinstance(p, str)) for ep in episodes})
