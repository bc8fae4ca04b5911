"""Episode recording: what the robot saw, what was sent, what the safety filter did, and the timing.

On-disk format (version 1). One directory per episode under the recording root:

    <root>/episode_000000/            a complete episode (appears only by an atomic directory rename)
        manifest.json                 {"format": "uio-robot-episode", "version": 1, "status": "complete",
                                       "index", "ticks", "rate_hz", "instruction", "action_names",
                                       "state_names", "image_names", "success", "interventions":
                                       [{"tick", "reasons"}], "faults": [{"tick", "faults"}],
                                       "summary": <telemetry summary>, plus the loop's settings}
        data.npz                      arrays with one row per tick (T rows):
            tick int64 [T]                schedule index of the tick
            time_s float64 [T]            tick start, seconds since the episode's first tick
            jitter_s, work_s, obs_age_s, inference_latency_s float64 [T]   (NaN = not applicable)
            overrun bool [T], missed int32 [T]
            has_obs bool [T]              False where the observation was unusable (then state is NaN,
                                          images are zeros)
            state float32 [T, S]
            image_<name> uint8 [T, H, W, 3]   one array per camera
            action_planned float32 [T, A]  what the policy/deadline policy intended (NaN = none)
            action_sent float32 [T, A]     what the robot received, after the safety filter
            intervened bool [T]            the safety filter changed this command (reasons in manifest)
            source <U5 [T]                 chunk | hold | safe
    <root>/.episode_000001.partial/   an episode being recorded, or one whose process crashed; its
                                      manifest says status "recording" (or "aborted" after an error).
                                      Readers ignore these; earlier episodes are never touched.

Ticks are buffered in memory and written when the episode ends (write to temp names, fsync, rename
the files, then rename the directory), so recording costs the control tick only a copy of the arrays.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .protocols import Observation
from .telemetry import TickRecord

FORMAT, VERSION = "uio-robot-episode", 1
_COMPLETE = re.compile(r"^episode_(\d{6})$")
_PARTIAL = re.compile(r"^\.episode_(\d{6})\.partial$")


class EpisodeFormatError(ValueError):
    """An episode directory that is incomplete, truncated or not in this format; the message says what."""


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, obj: dict) -> None:
    _write_atomic(path, lambda f: f.write(json.dumps(obj, indent=2, default=_json_default).encode()))


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EpisodeRecorder:
    """Creates numbered episode directories under `root`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def start_episode(self, meta: dict | None = None) -> EpisodeWriter:
        used = [int(m.group(1)) for p in self.root.iterdir() for m in [_COMPLETE.match(p.name) or
                                                                        _PARTIAL.match(p.name)] if m]
        index = max(used, default=-1) + 1
        return EpisodeWriter(self.root, index, dict(meta or {}))


class EpisodeWriter:
    """Buffers one episode's ticks; `finish` publishes it atomically, `abort` leaves it marked partial."""

    def __init__(self, root: Path, index: int, meta: dict):
        self.index, self.meta = index, meta
        self.final_dir = root / f"episode_{index:06d}"
        self.partial_dir = root / f".episode_{index:06d}.partial"
        self.partial_dir.mkdir()
        self._rows: list[tuple[TickRecord, Observation | None, np.ndarray | None, np.ndarray]] = []
        self._manifest("recording")

    def _manifest(self, status: str, **extra) -> dict:
        manifest = {"format": FORMAT, "version": VERSION, "status": status, "index": self.index,
                    **self.meta, **extra}
        _write_json(self.partial_dir / "manifest.json", manifest)
        return manifest

    def add(self, rec: TickRecord, obs: Observation | None, planned: np.ndarray | None, sent: np.ndarray) -> None:
        """Keep one tick (copies the arrays: the robot may reuse its buffers)."""
        if obs is not None:
            obs = Observation({k: v.copy() for k, v in obs.images.items()}, np.array(obs.state, np.float32),
                              obs.instruction, obs.timestamp)
        self._rows.append((rec, obs, None if planned is None else np.array(planned, np.float32),
                           np.array(sent, np.float32)))

    def finish(self, summary: dict, success: bool = False) -> Path:
        arrays, extra = self._arrays()
        _write_atomic(self.partial_dir / "data.npz", lambda f: np.savez(f, **arrays))
        self._manifest("complete", summary=summary, success=bool(success), **extra)
        _fsync_dir(self.partial_dir)
        os.replace(self.partial_dir, self.final_dir)
        _fsync_dir(self.final_dir.parent)
        return self.final_dir

    def abort(self) -> None:
        """The run failed: keep what was recorded as a clearly marked, ignored partial episode."""
        self._manifest("aborted", ticks=len(self._rows))

    def _arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        rows = self._rows
        if not rows:
            raise EpisodeFormatError("cannot finish an episode with no ticks")
        first_obs = next((o for _, o, _, _ in rows if o is not None), None)
        if "state_names" in self.meta:
            sdim = len(self.meta["state_names"])
        else:
            sdim = first_obs.state.size if first_obs is not None else 0
        adim = rows[0][3].size
        t0 = rows[0][0].started
        images = {k: np.zeros((len(rows),) + v.shape, np.uint8) for k, v in (first_obs.images.items()
                                                                            if first_obs else [])}
        state = np.full((len(rows), sdim), np.nan, np.float32)
        planned = np.full((len(rows), adim), np.nan, np.float32)
        for i, (_, obs, plan, _) in enumerate(rows):
            if obs is not None:
                state[i] = obs.state
                for name, img in obs.images.items():
                    if name not in images or images[name].shape[1:] != img.shape:
                        raise EpisodeFormatError(f"tick {i}: camera {name!r} changed shape or appeared mid-episode")
                    images[name][i] = img
            if plan is not None:
                planned[i] = plan
        recs = [r for r, _, _, _ in rows]
        arrays = {
            "tick": np.array([r.tick for r in recs], np.int64),
            "time_s": np.array([r.started - t0 for r in recs], np.float64),
            "jitter_s": np.array([r.jitter_s for r in recs], np.float64),
            "work_s": np.array([r.work_s for r in recs], np.float64),
            "obs_age_s": np.array([r.obs_age_s for r in recs], np.float64),
            "inference_latency_s": np.array([r.inference_latency_s for r in recs], np.float64),
            "overrun": np.array([r.overrun for r in recs], bool),
            "missed": np.array([r.missed for r in recs], np.int32),
            "has_obs": np.array([o is not None for _, o, _, _ in rows], bool),
            "state": state,
            "action_planned": planned,
            "action_sent": np.stack([s for _, _, _, s in rows]),
            "intervened": np.array([bool(r.interventions) for r in recs], bool),
            "source": np.array([r.source for r in recs], "<U5"),
            **{f"image_{k}": v for k, v in images.items()},
        }
        instruction = first_obs.instruction if first_obs is not None else ""
        extra = {
            "ticks": len(rows),
            "image_names": sorted(images),
            "instruction": instruction if isinstance(instruction, str) else "<multimodal prompt>",
            "interventions": [{"tick": r.tick, "reasons": r.interventions} for r in recs if r.interventions],
            "faults": [{"tick": r.tick, "faults": r.faults} for r in recs if r.faults],
        }
        return arrays, extra


@dataclass
class Episode:
    path: Path
    manifest: dict
    data: dict[str, np.ndarray]


_REQUIRED = ("tick", "time_s", "state", "action_sent", "action_planned", "intervened", "source", "has_obs")


def list_episodes(root: str | os.PathLike) -> list[Path]:
    """Complete episodes under `root`, in order; partial (crashed or running) ones are left out."""
    root = Path(root)
    return sorted(p for p in root.iterdir() if p.is_dir() and _COMPLETE.match(p.name)) if root.is_dir() else []


def load_episode(path: str | os.PathLike) -> Episode:
    """Read and check one episode directory; raise `EpisodeFormatError` naming the problem."""
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        raise EpisodeFormatError(f"{path}: no manifest.json") from None
    except json.JSONDecodeError as exc:
        raise EpisodeFormatError(f"{path}/manifest.json: not valid JSON ({exc})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise EpisodeFormatError(f"{path}: format {manifest.get('format')!r} version {manifest.get('version')!r}, "
                                 f"expected {FORMAT!r} version {VERSION}")
    if manifest.get("status") != "complete":
        raise EpisodeFormatError(f"{path}: episode status is {manifest.get('status')!r}, not 'complete'")
    try:
        with np.load(path / "data.npz", allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise EpisodeFormatError(f"{path}: no data.npz") from None
    except Exception as exc:  # zipfile/ValueError on a truncated or corrupt archive
        raise EpisodeFormatError(f"{path}/data.npz: unreadable ({type(exc).__name__}: {exc})") from None
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise EpisodeFormatError(f"{path}/data.npz: missing arrays {missing}")
    lengths = {k: len(v) for k, v in data.items()}
    if len(set(lengths.values())) != 1 or lengths["tick"] != manifest.get("ticks"):
        raise EpisodeFormatError(f"{path}: arrays disagree on the number of ticks "
                                 f"(manifest {manifest.get('ticks')}, arrays {lengths})")
    return Episode(path, manifest, data)
