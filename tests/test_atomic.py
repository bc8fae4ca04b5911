"""Atomic writes: the target appears whole or keeps its old content, with the permissions a plain
open()/mkdir() gives (not tempfile's 0600/0700), and no temporary file is left behind."""

import json
import os
import stat

import pytest

from uio_robot.common.atomic import atomic_dir, atomic_path, atomic_write_json


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_files_get_plain_permissions_and_a_failed_write_keeps_the_old_one(tmp_path):
    target = tmp_path / "sub" / "results.json"
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert _mode(target) == 0o666 & ~_umask()
    with atomic_path(tmp_path / "w.safetensors") as tmp:
        tmp.unlink()  # a writer that replaces the file it is given, with its own mode
        tmp.write_bytes(b"x")
        os.chmod(tmp, 0o600)
    assert _mode(tmp_path / "w.safetensors") == 0o666 & ~_umask()
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("disk full")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]


def test_directories_replace_the_old_one_whole_or_not_at_all(tmp_path):
    target = tmp_path / "checkpoint"
    with atomic_dir(target) as tmp:
        (tmp / "model.safetensors").write_bytes(b"v1")
        os.chmod(tmp / "model.safetensors", 0o600)  # as safetensors' save_file leaves it
    assert _mode(target) == 0o777 & ~_umask()
    assert _mode(target / "model.safetensors") == 0o666 & ~_umask()
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as tmp:
            (tmp / "model.safetensors").write_bytes(b"v2")
            raise KeyboardInterrupt
    assert (target / "model.safetensors").read_bytes() == b"v1"
    with atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]  # replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
