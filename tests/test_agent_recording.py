import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from uio_robot.agent.config import LoopConfig, SafetyConfig
from uio_robot.agent.loop import ControlLoop
from uio_robot.agent.protocols import Observation
from uio_robot.agent.recording import EpisodeFormatError, EpisodeRecorder, list_episodes, load_episode
from uio_robot.agent.sim_robot import PointRobot
from uio_robot.agent.telemetry import TickRecord
from uio_robot.policies.simple import ReplayPolicy, StandInPolicy


def record(root, ticks=20, estop_at=None):
    robot = PointRobot(dt=0.02)
    policy = StandInPolicy(robot.action_spec, horizon=4, period=0.02, compute_ms=1)
    holder = {}

    def on_tick(rec):
        if estop_at is not None and rec.tick >= estop_at and "at" not in holder:
            holder["at"] = rec.tick
            holder["loop"].estop("test")

    loop = ControlLoop(robot, policy, LoopConfig(rate_hz=50, replan_every=2), SafetyConfig(),
                       recorder=EpisodeRecorder(root, piece_ticks=8), on_tick=on_tick)
    holder["loop"] = loop
    with loop:
        loop.run(max_ticks=ticks, seed=0)
    robot.estop_tick = holder.get("at")
    return robot


def test_round_trip_matches_what_the_robot_received(tmp_path):
    robot = record(tmp_path, ticks=20, estop_at=12)
    (path,) = list_episodes(tmp_path)
    ep = load_episode(path)
    m, d = ep.manifest, ep.data
    assert m["status"] == "complete" and m["ticks"] == 20 and m["image_names"] == ["image"]
    assert m["instruction"] == robot.instruction and m["action_names"] == ["vx", "vy"]
    sent = np.stack([c for _, c in robot.commands])
    np.testing.assert_array_equal(d["action_sent"], sent)
    assert d["image_image"].shape == (20, 64, 64, 3) and d["image_image"].dtype == np.uint8
    assert d["state"].shape == (20, 4) and np.all(np.diff(d["time_s"]) > 0)
    stopped = [e["tick"] for e in m["interventions"] if "estop" in e["reasons"]]
    after = d["tick"] > robot.estop_tick
    assert min(stopped) == d["tick"][after][0] and np.all(d["intervened"][after])
    assert m["summary"]["ticks"] == 20 and [p["ticks"] for p in m["pieces"]] == [8, 8, 4]
    # Timing set after a tick was handed to the recorder (work time) still reaches every row.
    assert np.all(d["work_s"] > 0) and d["overrun"].sum() == m["summary"]["overruns"]
    # A recorded episode can be replayed.
    replay = ReplayPolicy(d["action_sent"], horizon=3, period=0.02)
    assert replay.act(robot.observe()).actions.shape == (3, 2)


def test_episodes_are_numbered_and_a_crash_leaves_earlier_ones_intact(tmp_path):
    record(tmp_path, ticks=5)
    script = textwrap.dedent(f"""
        import os, numpy as np
        from uio_robot.agent.recording import EpisodeRecorder
        from uio_robot.agent.telemetry import TickRecord
        import time
        w = EpisodeRecorder({str(tmp_path)!r}, piece_ticks=20).start_episode({{"rate_hz": 50}})
        for t in range(45):
            w.add(TickRecord(t, 0.02 * t, 0.02 * t), None, None, np.full(2, t, np.float32))
        while w.pieces_written < 2:  # two full pieces handed off; the last 5 ticks are only in memory
            time.sleep(0.01)
        os._exit(1)  # the process dies mid-episode
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 1
    record(tmp_path, ticks=5)
    names = sorted(os.listdir(tmp_path))
    assert names == [".episode_000001.partial", "episode_000000", "episode_000002"]
    partial_dir = tmp_path / ".episode_000001.partial"
    partial = json.loads((partial_dir / "manifest.json").read_text())
    assert partial["status"] == "recording" and partial["ticks"] == 40  # what reached the disk, said so
    assert [p["file"] for p in partial["pieces"]] == ["data_000000.npz", "data_000001.npz"]
    with np.load(partial_dir / "data_000001.npz") as piece:
        np.testing.assert_array_equal(piece["action_sent"][:, 0], np.arange(20, 40))
    assert [p.name for p in list_episodes(tmp_path)] == ["episode_000000", "episode_000002"]
    assert load_episode(tmp_path / "episode_000000").manifest["ticks"] == 5
    with pytest.raises(EpisodeFormatError, match="status is 'recording'"):
        load_episode(tmp_path / ".episode_000001.partial")


def test_truncated_data_is_a_clear_error(tmp_path):
    record(tmp_path, ticks=5)
    data = tmp_path / "episode_000000" / "data_000000.npz"
    data.write_bytes(data.read_bytes()[:200])
    with pytest.raises(EpisodeFormatError, match="data_000000.npz: unreadable"):
        load_episode(tmp_path / "episode_000000")


def test_long_episode_streams_to_disk_with_bounded_memory(tmp_path):
    """300 ticks in pieces of 20: pieces reach the disk while the episode runs, memory holds at most
    piece_ticks * (max_pending_pieces + 2) ticks, and the joined episode is exactly what was added."""
    recorder = EpisodeRecorder(tmp_path, piece_ticks=20, max_pending_pieces=2)
    writer = recorder.start_episode({"rate_hz": 50, "state_names": ["x", "y"]})
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (300, 16, 16, 3), dtype=np.uint8)
    peak, written_midway = 0, 0
    for t in range(300):
        obs = None if t < 30 or t % 7 == 0 else Observation({"cam": frames[t]}, np.array([t, -t], np.float32),
                                                            "reach", float(t))
        rec = TickRecord(t, 0.02 * t, 0.02 * t + 1e-4)
        rec.interventions = ["clamp"] if t % 50 == 0 else []
        writer.add(rec, obs, None if t % 3 else np.ones(2), np.full(2, t, np.float32))
        peak = max(peak, writer.in_memory_ticks)
        if t == 200:
            written_midway = writer.pieces_written
    assert peak <= 20 * (2 + 2)
    assert written_midway >= 5  # pieces were on disk long before the end
    path = writer.finish({"ticks": 300})
    ep = load_episode(path)
    d = ep.data
    assert ep.manifest["version"] == 2 and ep.manifest["ticks"] == 300 and len(ep.manifest["pieces"]) == 15
    np.testing.assert_array_equal(d["tick"], np.arange(300))
    np.testing.assert_array_equal(d["action_sent"][:, 0], np.arange(300))
    has = np.array([not (t < 30 or t % 7 == 0) for t in range(300)])
    np.testing.assert_array_equal(d["has_obs"], has)
    np.testing.assert_array_equal(d["image_cam"][has], frames[has])  # the first piece had no camera yet
    assert not d["image_cam"][~has].any() and np.isnan(d["state"][~has]).all()
    np.testing.assert_array_equal(d["state"][has, 0], np.arange(300)[has])
    assert np.isnan(d["action_planned"][1::3]).all() and (d["action_planned"][::3] == 1).all()
    assert [e["tick"] for e in ep.manifest["interventions"]] == list(range(0, 300, 50))
    assert ep.manifest["image_names"] == ["cam"] and ep.manifest["instruction"] == "reach"


def test_version_1_episodes_still_load(tmp_path):
    path = tmp_path / "episode_000000"
    path.mkdir()
    n = 4
    arrays = {"tick": np.arange(n), "time_s": np.arange(n) * 0.05, "state": np.zeros((n, 2), np.float32),
              "action_sent": np.ones((n, 2), np.float32), "action_planned": np.ones((n, 2), np.float32),
              "intervened": np.zeros(n, bool), "source": np.array(["chunk"] * n), "has_obs": np.ones(n, bool)}
    np.savez(path / "data.npz", **arrays)
    (path / "manifest.json").write_text(json.dumps({"format": "uio-robot-episode", "version": 1,
                                                    "status": "complete", "ticks": n}))
    ep = load_episode(path)
    np.testing.assert_array_equal(ep.data["action_sent"], arrays["action_sent"])
    (path / "manifest.json").write_text(json.dumps({"format": "uio-robot-episode", "version": 3,
                                                    "status": "complete", "ticks": n}))
    with pytest.raises(EpisodeFormatError, match="version 3, expected 'uio-robot-episode' version 1 or 2"):
        load_episode(path)
