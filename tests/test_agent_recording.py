import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from uio_robot.agent.config import LoopConfig, SafetyConfig
from uio_robot.agent.loop import ControlLoop
from uio_robot.agent.recording import EpisodeFormatError, EpisodeRecorder, list_episodes, load_episode
from uio_robot.agent.sim_robot import PointRobot
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
                       recorder=EpisodeRecorder(root), on_tick=on_tick)
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
    assert m["summary"]["ticks"] == 20
    # A recorded episode can be replayed.
    replay = ReplayPolicy(d["action_sent"], horizon=3, period=0.02)
    assert replay.act(robot.observe()).actions.shape == (3, 2)


def test_episodes_are_numbered_and_a_crash_leaves_earlier_ones_intact(tmp_path):
    record(tmp_path, ticks=5)
    script = textwrap.dedent(f"""
        import os, numpy as np
        from uio_robot.agent.recording import EpisodeRecorder
        from uio_robot.agent.telemetry import TickRecord
        w = EpisodeRecorder({str(tmp_path)!r}).start_episode({{"rate_hz": 50}})
        w.add(TickRecord(0, 0.0, 0.0), None, None, np.zeros(2, np.float32))
        os._exit(1)  # the process dies mid-episode
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 1
    record(tmp_path, ticks=5)
    names = sorted(os.listdir(tmp_path))
    assert names == [".episode_000001.partial", "episode_000000", "episode_000002"]
    partial = json.loads((tmp_path / ".episode_000001.partial" / "manifest.json").read_text())
    assert partial["status"] == "recording"
    assert [p.name for p in list_episodes(tmp_path)] == ["episode_000000", "episode_000002"]
    assert load_episode(tmp_path / "episode_000000").manifest["ticks"] == 5
    with pytest.raises(EpisodeFormatError, match="status is 'recording'"):
        load_episode(tmp_path / ".episode_000001.partial")


def test_truncated_data_is_a_clear_error(tmp_path):
    record(tmp_path, ticks=5)
    data = tmp_path / "episode_000000" / "data.npz"
    data.write_bytes(data.read_bytes()[:200])
    with pytest.raises(EpisodeFormatError, match="data.npz: unreadable"):
        load_episode(tmp_path / "episode_000000")
