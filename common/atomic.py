"""Atomic file writes: results, datasets, checkpoints and videos appear whole or not at all.

Each write goes to a temporary file beside its target and is renamed over it, so a crash or a full disk
leaves the previous version in place. `tempfile` creates files 0600 and directories 0700; the renamed
result gets the permissions a plain `open()` or `mkdir()` would give (0666 / 0777 less the umask), so
other users and tools can read what a run wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would briefly set 0 for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _umask()
FILE_MODE, DIR_MODE = 0o666 & ~UMASK, 0o777 & ~UMASK


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp", durable: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` to write; renamed onto `path` when the block ends without an error,
    removed when it raises. `suffix` matters to writers that pick a format by extension (".mp4");
    `durable` flushes the file to the disk before the rename (a recording that must survive power loss)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)  # after the block: some writers (safetensors) recreate the file 0600
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary directory beside `path` to fill; it replaces `path` (and any old one there) when the
    block ends without an error, and is deleted when it raises, leaving the old one untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, DIR_MODE)
        for entry in tmp.iterdir():
            if entry.is_file():
                os.chmod(entry, FILE_MODE)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | os.PathLike, obj, **dump_options) -> None:
    """`obj` as indented JSON with a final newline; `dump_options` go to json.dumps (sort_keys, default)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, **dump_options) + "\n").encode())
