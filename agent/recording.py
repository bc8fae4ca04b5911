"""Episode recording: what the robot saw, what was sent, what the safety filter did, and the timing.

On-disk format (version 2). One directory per episode under the recording root:

    <root>/episode_000000/            a complete episode (appears only by an atomic directory rename)
        manifest.json                 {"format": "uio-robot-episode", "version": 2, "status": "complete",
                                       "index", "ticks", "rate_hz", "instruction", "action_names",
                                       "state_names", "image_names", "success", "interventions":
                                       [{"tick", "reasons"}], "faults": [{"tick", "faults"}],
                                       "pieces": [{"file", "ticks"}], "summary": <telemetry summary>,
                                       plus the loop's settings}
        data_000000.npz, data_000001.npz, ...   consecutive pieces of at most `piece_ticks` rows each
                                      (listed in "pieces"); every piece holds these arrays, one row per tick:
            tick int64 [T]                schedule index of the tick
            time_s float64 [T]            tick start, seconds since the episode's first tick
            jitter_s, work_s, obs_age_s, inference_latency_s float64 [T]   (NaN = not applicable)
            overrun bool [T], missed int32 [T]
            has_obs bool [T]              False where the observation was unusable (then state is NaN,
                                          images are zeros)
            state float32 [T, S]
            image_<name> uint8 [T, H, W, 3]   one array per camera (absent from pieces recorded before
                                          the first usable observation: read as zeros)
            action_planned float32 [T, A]  what the policy/deadline policy intended (NaN = none)
            action_sent float32 [T, A]     what the robot received, after the safety filter
            intervened bool [T]            the safety filter changed this command (reasons in manifest)
            source <U5 [T]                 chunk | hold | safe
    <root>/.episode_000001.partial/   an episode being recorded, or one whose process crashed; its
                                      manifest says status "recording" (or "aborted" after an error) and
                                      lists the pieces already on disk. Readers ignore these; earlier
                                      episodes are never touched.

Version 1 (still read by `load_episode`) kept the whole episode in one `data.npz` with the same arrays,
and the recorder held every tick in memory until the episode ended. Version 2 streams: the control
thread only appends a tick to the current piece; a full piece goes to a writer thread, which writes it
(temp name, fsync, rename) while the loop goes on. At most `piece_ticks * (max_pending_pieces + 2)` ticks
are in memory (the piece being filled, the queued ones, the one being written); if the disk falls that far
behind, `add` waits for it rather than grow without limit. `finish` writes the last piece and the
manifest, then renames the directory.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uio_robot.common.atomic import atomic_path

from .protocols import Observation
from .telemetry import TickRecord

log = logging.getLogger(__name__)

FORMAT, VERSION = "uio-robot-episode", 2
READABLE_VERSIONS = (1, 2)
_COMPLETE = re.compile(r"^episode_(\d{6})$")
_PARTIAL = re.compile(r"^\.episode_(\d{6})\.partial$")
_Row = tuple[TickRecord, Observation | None, np.ndarray | None, np.ndarray]
class EpisodeFormatError(ValueError):
    """An episode directory that is incomplete, truncated or not in this format; the message says what."""


def _write_atomic(path: Path, write) -> None:
    with atomic_path(path, durable=True) as tmp, open(tmp, "wb") as f:
        write(f)


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
    """Creates numbered episode directories under `root`; each episode streams to disk in pieces of
    `piece_ticks` ticks (see the module docstring for the memory bound)."""

    def __init__(self, root: str | os.PathLike, piece_ticks: int = 100, max_pending_pieces: int = 2):
        if piece_ticks < 1 or max_pending_pieces < 1:
            raise ValueError(f"EpisodeRecorder: need piece_ticks >= 1 and max_pending_pieces >= 1, got "
                             f"{piece_ticks}, {max_pending_pieces}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.piece_ticks, self.max_pending_pieces = piece_ticks, max_pending_pieces

    def start_episode(self, meta: dict | None = None) -> EpisodeWriter:
        used = [int(m.group(1)) for p in self.root.iterdir() for m in [_COMPLETE.match(p.name) or
                                                                        _PARTIAL.match(p.name)] if m]
        index = max(used, default=-1) + 1
        return EpisodeWriter(self.root, index, dict(meta or {}), self.piece_ticks, self.max_pending_pieces)


class EpisodeWriter:
    """Streams one episode's ticks to disk in pieces; `finish` publishes it atomically, `abort` leaves it
    marked partial."""

    def __init__(self, root: Path, index: int, meta: dict, piece_ticks: int = 100, max_pending_pieces: int = 2):
        self.index, self.meta, self.piece_ticks = index, meta, piece_ticks
        self.final_dir = root / f"episode_{index:06d}"
        self.partial_dir = root / f".episode_{index:06d}.partial"
        self.partial_dir.mkdir()
        self._rows: list[_Row] = []  # the piece being filled
        self._ticks = 0
        self._t0: float | None = None
        self._image_shapes: dict[str, tuple[int, ...]] | None = None  # fixed by the first usable observation
        self._state_dim: int | None = len(meta["state_names"]) if "state_names" in meta else None
        self._instruction: str | None = None
        self._events: dict[str, list[dict]] = {"interventions": [], "faults": []}
        self._pieces: list[dict] = []  # written so far (the writer thread appends)
        self._listed = 0  # pieces the manifest on disk lists
        self._handed_off = 0  # pieces given to the writer (numbers the files)
        self._lock = threading.Lock()
        self._in_memory = 0  # ticks held: the piece being filled, queued pieces, the one being written
        self._pending: queue.Queue = queue.Queue(maxsize=max_pending_pieces)
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None
        self._manifest("recording")

    @property
    def in_memory_ticks(self) -> int:
        """Ticks of this episode currently held in memory (bounded; see the module docstring)."""
        with self._lock:
            return self._in_memory

    @property
    def pieces_written(self) -> int:
        """Pieces on disk and listed in the manifest on disk (a crash after this loses none of them)."""
        with self._lock:
            return self._listed

    def _manifest(self, status: str, **extra) -> dict:
        with self._lock:
            pieces = list(self._pieces)
        manifest = {"format": FORMAT, "version": VERSION, "status": status, "index": self.index,
                    **self.meta, "pieces": pieces, **extra}
        _write_json(self.partial_dir / "manifest.json", manifest)
        return manifest

    def add(self, rec: TickRecord, obs: Observation | None, planned: np.ndarray | None, sent: np.ndarray) -> None:
        """Keep one tick (copies the arrays: the robot may reuse its buffers). Fields of `rec` set after this
        call (work time, overrun) are read when the piece is handed to the writer, on the next tick."""
        self._raise_writer_error()
        if len(self._rows) >= self.piece_ticks:  # the previous tick is complete now: hand the piece off
            self._hand_off()
        if self._t0 is None:
            self._t0 = rec.started
        if obs is not None:
            obs = self._checked_copy(rec, obs)
        self._rows.append((rec, obs, None if planned is None else np.array(planned, np.float32),
                           np.array(sent, np.float32)))
        with self._lock:
            self._in_memory += 1
        self._ticks += 1

    def _checked_copy(self, rec: TickRecord, obs: Observation) -> Observation:
        shapes = {k: v.shape for k, v in obs.images.items()}
        if self._image_shapes is None:
            self._image_shapes = shapes
            self._instruction = obs.instruction if isinstance(obs.instruction, str) else "<multimodal prompt>"
            if self._state_dim is None:
                self._state_dim = int(np.asarray(obs.state).size)
        elif shapes != self._image_shapes:
            raise EpisodeFormatError(f"tick {rec.tick}: cameras changed mid-episode: {shapes} "
                                     f"(the episode started with {self._image_shapes})")
        return Observation({k: v.copy() for k, v in obs.images.items()}, np.array(obs.state, np.float32),
                           obs.instruction, obs.timestamp)

    def finish(self, summary: dict, success: bool = False) -> Path:
        if self._ticks == 0:
            raise EpisodeFormatError("cannot finish an episode with no ticks")
        self._drain()
        self._raise_writer_error()
        self._manifest("complete", summary=summary, success=bool(success), **self._extra())
        _fsync_dir(self.partial_dir)
        os.replace(self.partial_dir, self.final_dir)
        _fsync_dir(self.final_dir.parent)
        return self.final_dir

    def abort(self) -> None:
        """The run failed: keep what was recorded as a clearly marked, ignored partial episode."""
        try:
            self._drain()
        finally:
            self._manifest("aborted", **self._extra())

    def _extra(self) -> dict:
        return {"ticks": self._ticks, "image_names": sorted(self._image_shapes or {}),
                "instruction": self._instruction or "", **self._events}

    # ---- pieces ------------------------------------------------------------------------------------------
    def _hand_off(self) -> None:
        rows, self._rows = self._rows, []
        for rec, *_ in rows:  # the manifest's event lists are small: only ticks with something to say
            if rec.interventions:
                self._events["interventions"].append({"tick": rec.tick, "reasons": list(rec.interventions)})
            if rec.faults:
                self._events["faults"].append({"tick": rec.tick, "faults": list(rec.faults)})
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_pieces, name=f"episode-{self.index}-writer",
                                            daemon=True)
            self._writer.start()
        item, self._handed_off = (self._handed_off, rows), self._handed_off + 1
        try:
            self._pending.put_nowait(item)
        except queue.Full:
            log.warning("episode %d: the disk is behind by %d pieces; recording waits for it",
                        self.index, self._pending.maxsize)
            self._pending.put(item)

    def _drain(self) -> None:
        """Hand off the last rows and wait until every piece is on disk."""
        if self._rows:
            self._hand_off()
        if self._writer is not None:
            self._pending.put(None)
            self._writer.join()
            self._writer = None

    def _write_pieces(self) -> None:
        while (item := self._pending.get()) is not None:
            number, rows = item
            if self._error is not None:
                continue  # keep taking pieces so that `add` never blocks on a dead writer
            try:
                name = f"data_{number:06d}.npz"
                arrays = self._piece_arrays(rows)
                _write_atomic(self.partial_dir / name, lambda f, a=arrays: np.savez(f, **a))
                with self._lock:
                    self._pieces.append({"file": name, "ticks": len(rows)})
                    self._in_memory -= len(rows)
                self._manifest("recording", ticks=sum(p["ticks"] for p in self._pieces))
                with self._lock:
                    self._listed += 1
            except BaseException as exc:  # noqa: B036 - handed to the control thread by the next add/finish
                self._error = exc

    def _raise_writer_error(self) -> None:
        if self._error is not None:
            raise EpisodeFormatError(f"episode {self.index}: writing a piece failed: "
                                     f"{type(self._error).__name__}: {self._error}") from self._error

    def _piece_arrays(self, rows: list[_Row]) -> dict[str, np.ndarray]:
        n, t0 = len(rows), self._t0
        shapes = self._image_shapes if any(o is not None for _, o, _, _ in rows) else None
        images = {k: np.zeros((n,) + shape, np.uint8) for k, shape in (shapes or {}).items()}
        state = np.full((n, self._state_dim or 0), np.nan, np.float32)
        adim = rows[0][3].size
        planned = np.full((n, adim), np.nan, np.float32)
        for i, (_, obs, plan, _) in enumerate(rows):
            if obs is not None:
                state[i] = obs.state
                for name, img in obs.images.items():
                    images[name][i] = img
            if plan is not None:
                planned[i] = plan
        recs = [r for r, _, _, _ in rows]
        return {
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
    """Read and check one episode directory (format version 1 or 2); raise `EpisodeFormatError` naming the
    problem. Version 2 pieces are joined, so `data` has one row per tick either way."""
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        raise EpisodeFormatError(f"{path}: no manifest.json") from None
    except json.JSONDecodeError as exc:
        raise EpisodeFormatError(f"{path}/manifest.json: not valid JSON ({exc})") from None
    version = manifest.get("version")
    if manifest.get("format") != FORMAT or version not in READABLE_VERSIONS:
        raise EpisodeFormatError(f"{path}: format {manifest.get('format')!r} version {version!r}, "
                                 f"expected {FORMAT!r} version {' or '.join(map(str, READABLE_VERSIONS))}")
    if manifest.get("status") != "complete":
        raise EpisodeFormatError(f"{path}: episode status is {manifest.get('status')!r}, not 'complete'")
    if version == 1:
        data = _read_npz(path / "data.npz")
    else:
        pieces = manifest.get("pieces")
        if not isinstance(pieces, list) or not pieces:
            raise EpisodeFormatError(f"{path}/manifest.json: 'pieces' must list the data files")
        data = _join_pieces(path, pieces)
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise EpisodeFormatError(f"{path}: missing arrays {missing}")
    lengths = {k: len(v) for k, v in data.items()}
    if len(set(lengths.values())) != 1 or lengths["tick"] != manifest.get("ticks"):
        raise EpisodeFormatError(f"{path}: arrays disagree on the number of ticks "
                                 f"(manifest {manifest.get('ticks')}, arrays {lengths})")
    return Episode(path, manifest, data)


def _read_npz(file: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(file, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise EpisodeFormatError(f"{file.parent}: no {file.name}") from None
    except Exception as exc:  # zipfile/ValueError on a truncated or corrupt archive
        raise EpisodeFormatError(f"{file}: unreadable ({type(exc).__name__}: {exc})") from None


def _join_pieces(path: Path, pieces: list) -> dict[str, np.ndarray]:
    parts = []
    for entry in pieces:
        if not isinstance(entry, dict) or not re.fullmatch(r"data_\d{6}\.npz", str(entry.get("file", ""))):
            raise EpisodeFormatError(f"{path}/manifest.json: bad piece entry {entry!r}")
        part = _read_npz(path / entry["file"])
        if len(part.get("tick", ())) != entry.get("ticks"):
            raise EpisodeFormatError(f"{path}/{entry['file']}: {len(part.get('tick', ()))} ticks, manifest says "
                                     f"{entry.get('ticks')}")
        parts.append(part)
    # Pieces recorded before the first usable observation carry no images: those rows are zeros.
    image_shapes = {k: v.shape[1:] for part in parts for k, v in part.items() if k.startswith("image_")}
    for part in parts:
        for k, shape in image_shapes.items():
            part.setdefault(k, np.zeros((len(part["tick"]),) + shape, np.uint8))
    keys = set(parts[0])
    if any(set(part) != keys for part in parts):
        raise EpisodeFormatError(f"{path}: the pieces hold different arrays")
    return {k: np.concatenate([part[k] for part in parts]) for k in sorted(keys)}
