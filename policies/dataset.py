"""Demonstrations and VQA scenes on disk, and the torch datasets that turn them into UIO2 examples.

On-disk format (version 1), one directory:

    index.json                     what is there (rewritten atomically every 2 s and at the end)
    episodes/<Task>-<seed>.npz     one scripted-expert episode
    scenes/<Task>-<seed>.npz       one VQA-only scene (a first frame and its question/answer pairs)

`index.json`: {"format": "uio_robot.demos", "version": 1, "action_names": [...], "state_names": [...],
"control_period_s": float, "image_size": int, "cameras": [...], "episodes": [entry, ...],
"scenes": [entry, ...]}, an entry being {"file", "task", "seed", "steps", "success", "instruction",
"vqa_pairs"} (scenes have steps 0).

An episode file holds, for T control steps: per camera `<camera>` uint8 [T, H, W, 3] (the observation
before each action), `state` float32 [T, S], `action` float32 [T, A], and `instruction`, `task`
(str), `seed` (int), `success` (bool), plus the VQA pairs of the first frame as the string arrays
`vqa_question`, `vqa_answer`, `vqa_kind`. Demos recorded with action noise (`record --action-noise`)
add `executed_action` [T, A], what the robot was sent; `action` stays the expert's choice. A scene file
holds `image` [H, W, 3] and the same VQA keys.
Strings are numpy unicode arrays, so nothing needs pickle to load.

Why this shape: a file per episode written to a temporary name and renamed, and the index replaced
every few seconds and when the writer closes, means an interrupted recording leaves every listed episode
readable and recording can resume by skipping what the index lists (a file written in the last seconds
before a hard kill, not listed yet, is recorded again: seeds make it the same).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from uio_robot.common.atomic import atomic_path, atomic_write_bytes
from uio_robot.policies.codec import Codec, VectorStats
from uio_robot.policies.prompts import ActionFormat, action_prompt, action_target, point_answer, question_prompt

FORMAT, VERSION = "uio_robot.demos", 1
INDEX = "index.json"
INDEX_LOCK = ".index.lock"  # held while a writer rereads and rewrites index.json
HELDOUT_SEED = 100_000  # evaluation seeds start here; training data must stay below
VQA_HELDOUT_EVERY = 10  # every tenth seed's VQA pairs are held out (the envs' `vqa.split_of` rule)
EPISODE_KEYS = ("state", "action", "instruction", "task", "seed", "success")
VQA_KEYS = ("vqa_question", "vqa_answer", "vqa_kind")


class DatasetError(ValueError):
    """A dataset directory or file that cannot be read; the message names the file and the problem."""


# ---- writing ------------------------------------------------------------------------------------

def atomic_save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def vqa_arrays(pairs: Sequence[dict]) -> dict[str, np.ndarray]:
    return {
        "vqa_question": np.array([p["question"] for p in pairs], dtype=np.str_),
        "vqa_answer": np.array([p["answer"] for p in pairs], dtype=np.str_),
        "vqa_kind": np.array([p["kind"] for p in pairs], dtype=np.str_),
    }


class SharedIndex:
    """A dataset's index.json, which several writers (recorder processes) may extend at once.

    Entries are kept in memory and written at most every `flush_s` seconds and at `flush()`. Why: the
    index grows with the dataset, so rewriting it after every file made recording quadratic (two
    recorders fell from 13-17 to 3.4 episodes/s at about 10 000 entries). A flush takes a file lock and,
    when another writer has replaced the file since this one last read or wrote it, rereads it first, so
    no writer drops another's entries. An entry whose key is already listed is not added twice."""

    def __init__(self, root: str | Path, header: dict, kinds: Sequence[str], read, key, flush_s: float = 2.0):
        self.root, self._kinds, self._read, self._key = Path(root), tuple(kinds), read, key
        self._seen = self._stamp()  # before the read: a write in between shows at the next flush
        if (self.root / INDEX).is_file():
            self.data = read(self.root)
            mismatched = [k for k, v in header.items() if self.data.get(k) != v]
            if mismatched:
                raise DatasetError(f"{self.root / INDEX}: existing dataset differs in {mismatched}; "
                                   "record into a new directory")
        else:
            self.data = {**header, **{kind: [] for kind in self._kinds}}
        self._keys = self._listed()
        self._pending: list[tuple[str, dict]] = []
        self._flush_s, self._flushed_at = flush_s, time.monotonic()

    def __contains__(self, key) -> bool:
        return key in self._keys

    def append(self, kind: str, entry: dict) -> None:
        if self._list(kind, entry):
            self._pending.append((kind, entry))
        if time.monotonic() - self._flushed_at >= self._flush_s:
            self.flush()

    def flush(self) -> None:
        """Write the entries appended since the last flush (merged with other writers')."""
        if not self._pending:
            return
        with _locked(self.root / INDEX_LOCK):
            stamp = self._stamp()
            if stamp is not None and stamp != self._seen:
                self.data = self._read(self.root)
                self._keys = self._listed()
                for kind, entry in self._pending:
                    self._list(kind, entry)
            atomic_write_bytes(self.root / INDEX, json.dumps(self.data, indent=1).encode())
            self._seen = self._stamp()
        self._pending.clear()
        self._flushed_at = time.monotonic()

    def _list(self, kind: str, entry: dict) -> bool:
        """Add `entry` to the in-memory index unless its key is listed; whether it was added."""
        key = self._key(kind, entry)
        if key in self._keys:
            return False
        self.data[kind].append(entry)
        self._keys.add(key)
        return True

    def _listed(self) -> set:
        return {self._key(kind, e) for kind in self._kinds for e in self.data[kind]}

    def _stamp(self) -> tuple[int, int, int] | None:
        """(inode, mtime, size) of index.json: an atomic rewrite always changes the inode."""
        try:
            st = os.stat(self.root / INDEX)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on `path` (created if missing), so writers sharing a directory take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class IndexedWriter:
    """A dataset writer over a `SharedIndex`; use it in a `with` block (or call `close`) so the last
    entries reach index.json, also when recording is interrupted."""

    _index: SharedIndex

    @property
    def index(self) -> dict:
        return self._index.data

    def close(self) -> None:
        self._index.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DemoWriter(IndexedWriter):
    """Adds episodes and scenes to a dataset directory and lists them in index.json. Several recorders
    may write one directory at once (`SharedIndex`)."""

    def __init__(self, root: str | Path, action_names: Sequence[str], state_names: Sequence[str],
                 control_period_s: float, image_size: int, cameras: Sequence[str], flush_s: float = 2.0):
        self.root = Path(root)
        header = {"format": FORMAT, "version": VERSION, "action_names": list(action_names),
                  "state_names": list(state_names), "control_period_s": float(control_period_s),
                  "image_size": int(image_size), "cameras": list(cameras)}
        self._index = SharedIndex(self.root, header, ("episodes", "scenes"), read_index,
                                  key=lambda kind, e: (e["task"], e["seed"], kind), flush_s=flush_s)

    def has(self, kind: str, task: str, seed: int) -> bool:
        return (task, int(seed), kind) in self._index

    def add_episode(self, task: str, seed: int, instruction: str, frames: dict[str, np.ndarray],
                    state: np.ndarray, action: np.ndarray, success: bool, vqa: Sequence[dict],
                    executed: np.ndarray | None = None) -> Path:
        steps = len(action)
        if len(state) != steps or any(len(v) != steps for v in frames.values()) or (
                executed is not None and len(executed) != steps):
            raise DatasetError(f"episode {task}-{seed}: {steps} actions but states/frames/executed actions "
                               "of other lengths")
        arrays = {name: np.asarray(v, dtype=np.uint8) for name, v in frames.items()}
        if executed is not None:
            arrays["executed_action"] = np.asarray(executed, np.float32)
        arrays.update(state=np.asarray(state, np.float32), action=np.asarray(action, np.float32),
                      instruction=np.array(instruction), task=np.array(task), seed=np.array(int(seed)),
                      success=np.array(bool(success)), **vqa_arrays(vqa))
        return self._add("episodes", task, seed, arrays, steps, bool(success), instruction, len(vqa))

    def add_scene(self, task: str, seed: int, instruction: str, image: np.ndarray, vqa: Sequence[dict]) -> Path:
        arrays = {"image": np.asarray(image, np.uint8), "instruction": np.array(instruction),
                  "task": np.array(task), "seed": np.array(int(seed)), **vqa_arrays(vqa)}
        return self._add("scenes", task, seed, arrays, 0, False, instruction, len(vqa))

    def _add(self, kind, task, seed, arrays, steps, success, instruction, n_vqa) -> Path:
        rel = f"{kind}/{task}-{int(seed):06d}.npz"
        atomic_save_npz(self.root / rel, arrays)
        self._index.append(kind, {"file": rel, "task": task, "seed": int(seed), "steps": int(steps),
                                  "success": bool(success), "instruction": instruction, "vqa_pairs": int(n_vqa)})
        return self.root / rel


# ---- reading ------------------------------------------------------------------------------------

def read_json_index(path: Path, fmt: str, version: int, record_with: str) -> dict:
    """A dataset's index.json, checked for its format name and version (shared by every dataset kind)."""
    if not path.is_file():
        raise DatasetError(f"{path}: no dataset index (record demonstrations with `{record_with}`)")
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(index, dict) or index.get("format") != fmt:
        raise DatasetError(f"{path}: not a {fmt} index")
    if index.get("version") != version:
        raise DatasetError(f"{path}: version {index.get('version')} not supported (expected {version})")
    return index


def read_index(root: str | Path) -> dict:
    path = Path(root) / INDEX
    index = read_json_index(path, FORMAT, VERSION, "uio-robot record")
    for key in ("action_names", "state_names", "episodes", "scenes", "cameras"):
        if key not in index:
            raise DatasetError(f"{path}: missing key {key!r}")
    return index


def load_npz(path: Path, required: Iterable[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise DatasetError(f"{path}: listed in the index but missing") from None
    except Exception as exc:  # zipfile/zlib/ValueError for damaged files
        raise DatasetError(f"{path}: damaged or not an npz file ({type(exc).__name__}: {exc})") from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DatasetError(f"{path}: missing arrays {missing}")
    return arrays


@dataclass
class Episode:
    task: str
    seed: int
    instruction: str
    images: dict[str, np.ndarray]  # camera -> uint8 [T, H, W, 3]
    state: np.ndarray  # [T, S]
    action: np.ndarray  # [T, A]
    success: bool
    vqa: list[dict] = field(default_factory=list)


@dataclass
class Scene:
    """A frame with question/answer pairs (an episode's first frame or a VQA-only scene)."""

    task: str
    seed: int
    image: np.ndarray
    vqa: list[dict]


def _pairs(arrays: dict[str, np.ndarray]) -> list[dict]:
    q, a, k = (arrays[key].tolist() for key in VQA_KEYS)
    return [{"question": qq, "answer": aa, "kind": kk} for qq, aa, kk in zip(q, a, k)]


def load_episode(path: Path, cameras: Sequence[str]) -> Episode:
    arrays = load_npz(path, (*EPISODE_KEYS, *VQA_KEYS, *cameras))
    ep = Episode(str(arrays["task"]), int(arrays["seed"]), str(arrays["instruction"]),
                 {c: arrays[c] for c in cameras}, arrays["state"], arrays["action"], bool(arrays["success"]),
                 _pairs(arrays))
    steps = len(ep.action)
    if len(ep.state) != steps or any(len(v) != steps for v in ep.images.values()):
        raise DatasetError(f"{path}: {steps} actions but states/frames of other lengths")
    if not (np.all(np.isfinite(ep.state)) and np.all(np.isfinite(ep.action))):
        raise DatasetError(f"{path}: NaN or inf in state/action")
    return ep


def load_scene(path: Path) -> Scene:
    arrays = load_npz(path, ("image", "task", "seed", *VQA_KEYS))
    return Scene(str(arrays["task"]), int(arrays["seed"]), arrays["image"], _pairs(arrays))


@dataclass
class DemoData:
    """Everything a training run reads from one dataset directory (held in memory: the data is small)."""

    index: dict
    episodes: list[Episode]
    scenes: list[Scene]

    @property
    def action_names(self) -> list[str]:
        return list(self.index["action_names"])

    @property
    def state_names(self) -> list[str]:
        return list(self.index["state_names"])


def load_demos(root: str | Path, tasks: Sequence[str] = (), cameras: Sequence[str] = ("image",),
               successful_only: bool = True, max_seed: int = HELDOUT_SEED, progress: bool = False) -> DemoData:
    """Read the training part of a dataset: episodes of `tasks` (all when empty) with seeds below
    `max_seed`, only successful ones by default, and every VQA scene (demo first frames included)."""
    root = Path(root)
    index = read_index(root)
    missing = [c for c in cameras if c not in index["cameras"]]
    if missing:
        raise DatasetError(f"{root}: cameras {missing} were not recorded (have {index['cameras']})")
    wanted = [e for e in index["episodes"] if (not tasks or e["task"] in tasks) and e["seed"] < max_seed
              and (e["success"] or not successful_only)]
    scene_entries = [e for e in index["scenes"] if e["seed"] < max_seed]
    from tqdm import tqdm

    episodes = [load_episode(root / e["file"], cameras)
                for e in tqdm(wanted, desc="episodes", disable=not progress, leave=False)]
    scenes = [Scene(ep.task, ep.seed, ep.images[cameras[0]][0], ep.vqa) for ep in episodes if ep.vqa]
    scenes += [load_scene(root / e["file"]) for e in tqdm(scene_entries, desc="scenes", disable=not progress,
                                                           leave=False)]
    return DemoData(index, episodes, scenes)


def load_recordings(dirs: Sequence[str | Path], tasks: Sequence[str] = (), cameras: Sequence[str] = ("image",),
                    progress: bool = False) -> DemoData:
    """`load_demos` of several dataset directories, read as one: they must share the action and state
    layout and the control period (image sizes may differ; examples are resized to the model's input)."""
    parts = [load_demos(d, tasks=tasks, cameras=cameras, progress=progress) for d in dirs]
    first = parts[0]
    for d, part in zip(dirs[1:], parts[1:]):
        for key in ("action_names", "state_names", "control_period_s"):
            if part.index.get(key) != first.index.get(key):
                raise DatasetError(f"{d}: {key} {part.index.get(key)} differs from {dirs[0]}'s "
                                   f"{first.index.get(key)}; recordings read together must match")
    return DemoData(first.index, [e for p in parts for e in p.episodes], [s for p in parts for s in p.scenes])


# ---- statistics ---------------------------------------------------------------------------------

def is_binary(values: np.ndarray) -> bool:
    """A dimension that only takes the values -1 and +1 (a binary gripper command): left unnormalized."""
    return bool(np.all(np.isin(values, (-1.0, 1.0))))


def compute_codec(data: DemoData, chunk: int, mode: str = "quantile") -> Codec:
    """Normalization statistics of the actions and states of the loaded episodes."""
    if not data.episodes:
        raise DatasetError("no episodes to compute normalization statistics from")
    actions = np.concatenate([ep.action for ep in data.episodes])
    states = np.concatenate([ep.state for ep in data.episodes])
    normalize = [not is_binary(actions[:, i]) for i in range(actions.shape[1])]
    return Codec(VectorStats.from_data(actions, data.action_names, normalize, mode),
                 VectorStats.from_data(states, data.state_names, mode=mode), chunk)


# ---- examples -----------------------------------------------------------------------------------

def chunk_actions(action: np.ndarray, t: int, chunk: int) -> np.ndarray:
    """Actions t .. t+chunk-1; past the episode's end the last action repeats."""
    idx = np.minimum(np.arange(t, t + chunk), len(action) - 1)
    return action[idx]


def answer_text(pair: dict) -> str:
    """The target text of a VQA pair: a "where" answer ("u v") becomes two location tokens (y, x)."""
    if pair["kind"] == "where":
        u, v = (float(s) for s in pair["answer"].split())
        return point_answer(v, u)
    return pair["answer"]


def vqa_split(seed: int) -> str:
    return "heldout" if seed >= HELDOUT_SEED or seed % VQA_HELDOUT_EVERY == 0 else "train"


@dataclass
class ExampleFormat:
    """What the model's examples look like: action format, codec and the network's input sizes."""

    action_format: ActionFormat
    codec: Codec
    image_size: int
    history_size: int
    num_frames: int
    max_text_len: int


class ActionExamples(Dataset):
    """One example per control step of every episode: image (+ history), state and instruction in,
    the next `chunk` actions out (as location tokens)."""

    def __init__(self, episodes: Sequence[Episode], tokenizer, fmt: ExampleFormat):
        self.episodes, self.tokenizer, self.fmt = list(episodes), tokenizer, fmt
        self.items = [(i, t) for i, ep in enumerate(self.episodes) for t in range(len(ep.action))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict[str, np.ndarray]:
        from uio_robot.policies.uio2.preprocess import preprocess_example

        i, t = self.items[idx]
        ep, f = self.episodes[i], self.fmt
        af, codec = f.action_format, f.codec
        frames = ep.images[af.camera]
        state_bins = codec.encode_state(ep.state[t])
        if af.state_dims:
            state_bins = state_bins[list(af.state_dims)]
        history = None
        if af.history:  # the policy's own rule, so training and inference pick the same frames
            from uio_robot.policies.uio2_policy import history_frame_steps

            history = [frames[s] for s in history_frame_steps(t, af.history, af.history_stride)]
        target = action_target(codec.encode_actions(chunk_actions(ep.action, t, af.chunk)))
        example = preprocess_example(self.tokenizer, action_prompt(ep.instruction, state_bins, af.history),
                                     image=frames[t], image_history=history, text_targets=target,
                                     num_frames=f.num_frames, image_size=f.image_size,
                                     history_size=f.history_size, max_text_len=f.max_text_len)
        example["meta/is_action"] = np.ones(1, np.int32)
        return example


class VQAExamples(Dataset):
    """One example per question/answer pair of the scenes of one split (of `kinds` only, if given);
    a kind in `repeat` counts that many times (rare or hard kinds, or the grounding control needs)."""

    def __init__(self, scenes: Sequence[Scene], tokenizer, fmt: ExampleFormat, split: str = "train",
                 repeat: Mapping[str, int] | None = None, kinds: Sequence[str] = ()):
        self.scenes, self.tokenizer, self.fmt = list(scenes), tokenizer, fmt
        repeat = repeat or {}
        self.items = [(i, j) for i, s in enumerate(self.scenes) if vqa_split(s.seed) == split
                      for j, pair in enumerate(s.vqa) if not kinds or pair["kind"] in kinds
                      for _ in range(repeat.get(pair["kind"], 1))]

    def __len__(self) -> int:
        return len(self.items)

    def pair(self, idx: int) -> tuple[Scene, dict]:
        i, j = self.items[idx]
        return self.scenes[i], self.scenes[i].vqa[j]

    def __getitem__(self, idx: int) -> dict[str, np.ndarray]:
        from uio_robot.policies.uio2.preprocess import preprocess_example

        scene, pair = self.pair(idx)
        f = self.fmt
        example = preprocess_example(self.tokenizer, question_prompt(pair["question"]), image=scene.image,
                                     text_targets=answer_text(pair), num_frames=f.num_frames,
                                     image_size=f.image_size, history_size=f.history_size,
                                     max_text_len=f.max_text_len)
        example["meta/is_action"] = np.zeros(1, np.int32)
        return example


class MixedExamples(Dataset):
    """Action examples plus VQA examples making up `vqa_fraction` of every epoch.

    The VQA slots walk through all pairs across epochs (`set_epoch`), so a large VQA set is seen in
    full over several epochs without growing an epoch; a small one repeats, so the fraction holds.
    A plain index space keeps it usable with `DistributedSampler`.
    """

    def __init__(self, actions: Dataset, vqa: Dataset, vqa_fraction: float):
        if not 0.0 <= vqa_fraction < 1.0:
            raise ValueError(f"vqa_fraction must be in [0, 1), got {vqa_fraction}")
        self.actions, self.vqa = actions, vqa
        n_act, n_vqa = len(actions), len(vqa)
        if n_act == 0 and n_vqa == 0:
            raise DatasetError("no training examples: no episodes and no VQA pairs")
        if n_act == 0 or n_vqa == 0:
            self.vqa_slots = n_vqa
        else:  # pairs repeat within an epoch when they are fewer than the fraction asks for
            self.vqa_slots = int(round(n_act * vqa_fraction / (1.0 - vqa_fraction)))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.actions) + self.vqa_slots

    def __getitem__(self, idx: int) -> dict[str, Any]:
        n_act = len(self.actions)
        if idx < n_act:
            return self.actions[idx]
        slot = idx - n_act
        return self.vqa[(slot + self.epoch * self.vqa_slots) % len(self.vqa)]
