"""`uio-robot eval` on VIMA-style tasks: native suite per task and per level, a UIO2 primitive checkpoint,
the original-benchmark path (replayed real episodes; a clear error without VIMA-Bench)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from test_vima_policy import make_primitive_checkpoint

from uio_robot.agent import evaluate
from uio_robot.agent.config import ConfigError
from uio_robot.agent.evaluate_vima import check_levels, run_episodes
from uio_robot.envs.vima_bench import VimaBenchEnv, action_to_vector
from uio_robot.envs.vima_bench.recorded import ReplayVimaBenchEnv, list_episodes, load_episode
from uio_robot.policies.simple import ReplayPolicy


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_native_suite_reports_per_task_and_per_level(tmp_path, capsys):
    out = tmp_path / "out"
    rc = evaluate.main(["eval.suite=vima", "eval.levels=[1,4]", "eval.tasks=[VisualManipulation,NovelNoun]",
                        "policy.kind=random", "eval.episodes=2", "eval.num_envs=2", "env.image_size=32",
                        "eval.videos=1", f"out_dir={out}"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    evaluate.check_results(results)
    check_levels(results)
    assert results["suite"] == "vima" and results["levels"] == [1, 4]
    assert set(results["per_task"]) == {"L1/VisualManipulation", "L4/NovelNoun"}
    assert set(results["per_level"]) == {"L1", "L4"}
    for entry in results["per_level"].values():
        assert entry["episodes"] == 2 and entry["expert"] == {"success_rate": 1.0, "episodes": 2, "successes": 2,
                                                             "ci95": entry["expert"]["ci95"]}
        assert 0.0 <= entry["ci95"][0] <= entry["success_rate"] <= entry["ci95"][1] <= 1.0
    assert {e["level"] for e in results["episode_results"]} == {1, 4}
    assert len(results["videos"]) == 2 and (out / "results.png").is_file()
    printed = capsys.readouterr().out
    assert "L4/NovelNoun" in printed and "L1 (all tasks)" in printed


def test_native_suite_with_a_uio2_primitive_checkpoint(tmp_path):
    checkpoint = make_primitive_checkpoint(tmp_path / "ck")
    out = tmp_path / "out"
    rc = evaluate.main(["eval.suite=vima", "eval.levels=[2]", "eval.tasks=[Rearrange]",
                        f"policy.checkpoint={checkpoint}", "policy.device=cpu", "policy.dtype=float32",
                        "eval.episodes=2", "eval.expert=false", "env.image_size=32", "eval.videos=0", f"out_dir={out}"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert results["checkpoint"] == str(checkpoint) and results["per_level"]["L2"]["expert"] is None
    assert all(1 <= e["steps"] <= 4 for e in results["episode_results"])  # the task's step budget


def test_bad_levels_and_tasks_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="eval.levels"):
        evaluate.main(["eval.suite=vima", "eval.levels=[5]", f"out_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="no such task"):
        evaluate.main(["eval.suite=vima", "eval.levels=[4]", "eval.tasks=[Rearrange]", f"out_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="eval.suite"):
        evaluate.main(["eval.suite=atari", f"out_dir={tmp_path}"])


def test_original_benchmark_needs_vima_bench(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vima_bench", None)
    with pytest.raises(ConfigError, match="VIMA-Bench is not installed"):
        evaluate.main(["eval.suite=vima_bench", "eval.levels=[1]", f"out_dir={tmp_path}"])


def test_episode_loop_on_replayed_vima_bench_episodes(shared_dir):
    """The evaluation loop drives the adapter with real VIMA-Bench observations and prompts."""
    root = shared_dir / "vima_bench_samples"
    for folder in list_episodes(root)[:8:2]:
        ep = load_episode(folder)
        policy = ReplayPolicy(np.stack([action_to_vector(ep.action(t)) for t in range(ep.n_steps)]), 1, 1.0)
        env = VimaBenchEnv(env=ReplayVimaBenchEnv(ep))
        (result,) = run_episodes(policy, [env], [ep.seed], ep.task, videos=1)
        assert result.success and result.steps == ep.n_steps
        assert len(result.frames) == ep.n_steps + 1 and result.frames[0].shape == (128, 256, 3)
