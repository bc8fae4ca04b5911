"""Recorded VIMA-Bench episodes (the `vima_bench_samples` format: episode.json + PNGs) read back into
VIMA-Bench's own structures, and a replay env with VIMA-Bench's env interface.

Why: the adapter must be testable against real VIMA-Bench data where VIMA-Bench itself (pybullet,
gym 0.21, a GitHub checkout) is not installed. `load_episode` returns exactly the arrays VIMA-Bench
produced (CHW images, uint8 masks, float32 actions); `ReplayVimaBenchEnv` serves them behind
`reset()` / `step(action)` / `get_prompt_and_assets()` and accepts only the recorded actions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .convert import ACTION_KEYS

EPISODE_FORMAT = "vima_bench_samples/episode v1"
LEVELS = {"L1": 1, "L2": 2, "L3": 3, "L4": 4}


def _read_png(path: Path, rgb: bool) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"recorded episode: image file missing: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR if rgb else cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"recorded episode: cannot decode {path}")
    if rgb:
        return np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))  # HWC BGR -> CHW RGB, as VIMA-Bench
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"recorded episode: {path} is not an 8-bit single-channel mask ({image.dtype} {image.shape})")
    return image


@dataclass
class RecordedEpisode:
    """One recorded episode; `meta` is its episode.json."""

    folder: Path
    meta: dict

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def level(self) -> int:
        return LEVELS[self.meta["level"]]

    @property
    def seed(self) -> int:
        return int(self.meta["seed"])

    @property
    def n_steps(self) -> int:
        return int(self.meta["n_steps"])

    def observation(self, t: int) -> dict:
        """Observation t (0 = after reset) as VIMA-Bench returned it: {"rgb", "segm", "ee"}."""
        entry = self.meta["observations"][t]
        return {"rgb": {v: _read_png(self.folder / p, True) for v, p in entry["rgb"].items()},
                "segm": {v: _read_png(self.folder / p, False) for v, p in entry["segm"].items()},
                "ee": int(entry["ee"])}

    def prompt_and_assets(self) -> tuple[str, dict]:
        """(prompt, prompt_assets) as `env.get_prompt_and_assets()` returned them."""
        assets = {}
        for name, a in self.meta["prompt_assets"].items():
            segm = {v: _read_png(self.folder / p, False) for v, p in a["segm"].items()}
            segm["obj_info"] = a["obj_info"]
            assets[name] = {"rgb": {v: _read_png(self.folder / p, True) for v, p in a["rgb"].items()},
                            "segm": segm, "placeholder_type": a["placeholder_type"]}
        return self.meta["prompt"], assets

    def action(self, t: int) -> dict[str, np.ndarray]:
        """The action given to `env.step` at step t (float32 arrays, bit-exact)."""
        return {k: np.asarray(self.meta["steps"][t]["action"][k], dtype=np.float32) for k in ACTION_KEYS}

    def step_info(self, t: int) -> tuple[float, bool, dict]:
        step = self.meta["steps"][t]
        return float(step["reward"]), bool(step["done"]), dict(step["info"])


def load_episode(folder: str | Path) -> RecordedEpisode:
    folder = Path(folder)
    path = folder / "episode.json"
    if not path.is_file():
        raise FileNotFoundError(f"recorded episode: {path} not found")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"recorded episode: {path} is not valid JSON ({exc})") from None
    if meta.get("format") != EPISODE_FORMAT:
        raise ValueError(f"recorded episode: {path} has format {meta.get('format')!r}, expected {EPISODE_FORMAT!r}")
    return RecordedEpisode(folder, meta)


def list_episodes(root: str | Path, oracle_only: bool = True) -> list[Path]:
    """Episode folders listed in `root`/index.json."""
    root = Path(root)
    index = json.loads((root / "index.json").read_text())
    return [root / e["folder"] for e in index["episodes"] if not oracle_only or e["policy"] == "oracle"]


class _TaskInfo:
    def __init__(self, oracle_max_steps: int):
        self.oracle_max_steps = oracle_max_steps


class ReplayVimaBenchEnv:
    """A recorded episode behind VIMA-Bench's env interface (gym 0.21 style: reset() -> obs,
    step(action) -> (obs, reward, done, info)). A step whose action differs from the recorded one by
    more than `tolerance` raises ValueError: a replay cannot know what a different action would do."""

    def __init__(self, episode: RecordedEpisode, tolerance: float = 4e-3):
        self.episode = episode
        self.tolerance = tolerance
        self.task = _TaskInfo(int(episode.meta["task_info"]["oracle_max_steps"]))
        self.meta_info = episode.meta["meta_info"]
        self.prompt, self.prompt_assets = episode.prompt_and_assets()
        self._t = 0

    def seed(self, seed: int | None = None) -> None:
        if seed is not None and seed != self.episode.seed:
            raise ValueError(f"replay: recorded with seed {self.episode.seed}, asked for {seed}")

    def reset(self) -> dict:
        self._t = 0
        return self.episode.observation(0)

    def get_prompt_and_assets(self) -> tuple[str, dict]:
        return self.prompt, self.prompt_assets

    def step(self, action: dict, skip_oracle: bool = True):
        t = self._t
        if t >= self.episode.n_steps:
            raise ValueError(f"replay: the recorded episode has only {self.episode.n_steps} steps")
        recorded = self.episode.action(t)
        for key in ACTION_KEYS:
            got = np.asarray(action[key], dtype=np.float64)
            want = recorded[key].astype(np.float64)
            if key.endswith("rotation"):  # q and -q are the same rotation
                diff = min(np.abs(got - want).max(), np.abs(got + want).max())
            else:
                diff = np.abs(got - want).max()
            if diff > self.tolerance:
                raise ValueError(f"replay: step {t} {key} {got.tolist()} differs from the recorded "
                                 f"{want.tolist()} by {diff:.4g} (> {self.tolerance})")
        self._t += 1
        reward, done, info = self.episode.step_info(t)
        return self.episode.observation(t + 1), reward, done, info

    def close(self) -> None:
        pass
