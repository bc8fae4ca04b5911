"""`uio-robot rollout`: one real-runtime episode (MuJoCo env, control loop, worker, safety filter) with the
tiny random-weight UIO2 checkpoint writes a playable video and a result JSON and asks one question;
a missing default model or a layout mismatch fails at start with a clear message."""

import json
import sys

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from tiny_policy import make_tiny_checkpoint

from uio_robot.agent import cli, pace, rollout


@pytest.fixture(autouse=True)
def keep_threads():
    """policy.threads changes torch's process-wide thread count; give the next tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_rollout_writes_video_and_json(tmp_path, capsys):
    ck = make_tiny_checkpoint(tmp_path / "ck", chunk=4, history=1)
    out = tmp_path / "out"
    rc = rollout.main(["env.task=uio_robot/Reach-v0", "env.seed=3", f"policy.checkpoint={ck}", "policy.device=cpu",
                       "policy.threads=1", "env.max_steps=12", "env.image_size=64", f"out_dir={out}"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    result = json.loads((out / "Reach_seed3.json").read_text())
    assert result["task"] == "Reach" and result["seed"] == 3 and result["policy"] == "uio2"
    assert result["steps"] == result["telemetry"]["ticks"] and 1 <= result["steps"] <= 12
    assert isinstance(result["success"], bool) and result["instruction"]
    assert result["question"] and isinstance(result["answer"], str) and result["expected_answer"]
    assert result["query_latency_ms"] > 0
    frames = [f for f in imageio.get_reader(str(out / "Reach_seed3.mp4"))]  # list() trips on nframes=inf
    assert len(frames) == result["steps"] + 1 and frames[0].shape == (64, 64, 3)
    assert np.std(frames[0]) > 5  # a rendered scene, not a blank frame
    assert "outcome" in printed and "question" in printed and "answer" in printed
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind
    assert torch.get_num_threads() == 1  # policy.threads reached torch
    # env.pace=auto: timed, a rate whose period holds a request, same-tick waits: most chunks play from
    # row 0 on the tick that asked for them (a request that missed its wait drops at least one row)
    assert result["pace"] and result["pace"] in printed and 0 < result["rate_hz"] <= 20
    assert result["act_wait_ms"] == pytest.approx(pace.PACE_WAIT * 1e3 / result["rate_hz"], rel=1e-3)
    telemetry = result["telemetry"]
    assert telemetry["latency_ms"]["n"] >= 2 and telemetry["dropped_steps"] < telemetry["latency_ms"]["n"]


def test_rollout_with_a_baseline_policy(tmp_path, capsys):
    rc = rollout.main(["env.task=uio_robot/Push-v0", "policy.kind=zero", "env.max_steps=5", "env.image_size=64",
                       f"out_dir={tmp_path}"])
    assert rc == 0
    result = json.loads((tmp_path / "Push_seed100000.json").read_text())
    assert result["success"] is False and result["answer"] is None and result["steps"] == 5
    assert "not asked" in capsys.readouterr().out


def test_missing_default_model_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "uio_robot.policies.assets", None)  # a build without the shipped model
    rc = cli.main(["rollout", f"out_dir={tmp_path}", "env.max_steps=2"])
    assert rc == 2
    assert "default model" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_layout_mismatch_fails_at_start(tmp_path, capsys):
    ck = make_tiny_checkpoint(tmp_path / "ck", state_names=tuple(f"s{i}" for i in range(12)))
    rc = cli.main(["rollout", f"policy.checkpoint={ck}", "env.task=uio_robot/Reach-v0", f"out_dir={tmp_path / 'out'}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "do not fit this robot" in err and "grip_x" in err
    assert not (tmp_path / "out").exists()


def test_factory_builds_every_kind(tmp_path):
    from uio_robot.policies.factory import build_policy
    from uio_robot.policies.simple import ReplayPolicy, ZeroPolicy
    from uio_robot.policies.types import ArraySpec, Observation

    spec = ArraySpec(("a", "b"), np.array([-1.0, -1.0]), np.array([1.0, 1.0]))
    state = ArraySpec(("s",), np.array([-1.0]), np.array([1.0]))
    assert isinstance(build_policy("zero", spec, state, horizon=3), ZeroPolicy)
    chunk = build_policy("random", spec, state, horizon=3, seed=1).act(Observation({}, np.zeros(1), "x", 0.0))
    assert chunk.actions.shape == (3, 2) and np.all(np.abs(chunk.actions) <= 1)
    recorded = np.arange(10, dtype=np.float32).reshape(5, 2) / 10
    np.save(tmp_path / "actions.npy", recorded)
    (tmp_path / "episode").mkdir()
    np.savez(tmp_path / "episode" / "data.npz", action_sent=recorded)  # an agent-recorded episode
    for source in (tmp_path / "actions.npy", tmp_path / "episode"):
        replay = build_policy("replay", spec, state, checkpoint=str(source), horizon=2)
        assert isinstance(replay, ReplayPolicy)
        np.testing.assert_array_equal(replay.act(Observation({}, np.zeros(1), "x", 0.0)).actions, recorded[:2])
    wide = ArraySpec(("a", "b", "c"), np.full(3, -1.0), np.full(3, 1.0))
    with pytest.raises(ValueError, match="do not fit the robot's 3 action dims"):
        build_policy("replay", wide, state, checkpoint=str(tmp_path / "actions.npy"))
    with pytest.raises(FileNotFoundError, match="no recorded actions"):
        build_policy("replay", spec, state, checkpoint=str(tmp_path / "missing.npy"))
    with pytest.raises(ValueError, match="unknown policy kind"):
        build_policy("magic", spec, state)
