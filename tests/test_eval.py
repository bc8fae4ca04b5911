"""`uio-robot eval`: Wilson intervals, answer scoring, results.json against its schema (baseline policy and
the tiny random-weight UIO2 checkpoint), the chart and videos, and parallel environments not changing
any episode's outcome."""

import json
import math

import imageio.v2 as imageio
import pytest
from tiny_policy import make_tiny_checkpoint

from uio_robot.agent import evaluate
from uio_robot.agent.config import load_config
from uio_robot.agent.stats import rate_summary, wilson_interval
from uio_robot.policies.uio2_policy import Grounding, UIO2Policy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "tiny", chunk=4, history=1)


def test_wilson_interval():
    low, high = wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)  # the textbook example
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    for n in (1, 7, 100):  # the interval always contains the observed rate
        for k in range(n + 1):
            lo, hi = wilson_interval(k, n)
            assert lo <= k / n <= hi
    assert wilson_interval(80, 100)[1] - wilson_interval(80, 100)[0] < wilson_interval(8, 10)[1] - low
    with pytest.raises(ValueError, match="at least one trial"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)
    assert rate_summary(3, 4)["success_rate"] == 0.75


def test_answer_scoring():
    pair = {"kind": "colour", "question": "what colour is the cube?", "answer": "red"}
    assert evaluate.answer_correct(pair, Grounding(" Red. "), (64, 64, 3))
    assert not evaluate.answer_correct(pair, Grounding("reddish"), (64, 64, 3))
    where = {"kind": "where", "question": "where is the red cube?", "answer": "0.25 0.50"}
    assert evaluate.answer_correct(where, Grounding("", point=(0.3 * 128, 0.55 * 64)), (64, 128, 3))
    assert not evaluate.answer_correct(where, Grounding("", point=(0.4 * 128, 0.5 * 64)), (64, 128, 3))
    assert not evaluate.answer_correct(where, Grounding("0.25 0.50"), (64, 128, 3))  # no point read
    assert evaluate.vqa_seeds(100001, 3) == [100010, 100020, 100030]  # held-out scenes only


def test_eval_with_a_baseline_policy_matches_schema(tmp_path, capsys):
    out = tmp_path / "out"
    rc = evaluate.main(["policy.kind=random", "eval.episodes=2", "eval.tasks=[Reach,Push]", "eval.seed=100000",
                        "env.max_steps=10", "env.image_size=64", "eval.videos=1", f"out_dir={out}"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    evaluate.check_results(results)
    assert results["episodes"] == 4 and results["seed"] == 100000 and results["checkpoint"] is None
    assert set(results["per_task"]) == {"Reach", "Push"}
    assert results["vqa"] is None  # a baseline has no language model
    for entry in results["per_task"].values():
        assert entry["episodes"] == 2 and entry["max_steps"] == 10 and entry["expert"]["episodes"] == 2
    assert sorted(e["seed"] for e in results["episode_results"]) == [100000, 100000, 100001, 100001]
    assert len(results["videos"]) == 2 and (out / "results.png").stat().st_size > 1000
    assert "Reach" in capsys.readouterr().out


def test_eval_with_the_uio2_checkpoint(tmp_path, checkpoint):
    out = tmp_path / "out"
    rc = evaluate.main([f"policy.checkpoint={checkpoint}", "policy.device=cpu", "eval.episodes=2",
                        "eval.tasks=[uio_robot/Reach-v0]", "eval.num_envs=2", "env.max_steps=8", "env.image_size=64",
                        "eval.vqa_scenes=1", "eval.videos=1", "eval.expert=false", f"out_dir={out}"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    evaluate.check_results(results)
    assert results["checkpoint"] == str(checkpoint) and results["policy"] == "uio2"
    assert results["per_task"]["Reach"]["expert"] is None and results["expert"] is None
    vqa = results["vqa"]
    assert vqa["questions"] > 5 and vqa["scenes"] == 1 and vqa["seeds"] == [100000, 100000]
    assert sum(k["questions"] for k in vqa["per_kind"].values()) == vqa["questions"]
    assert "where" in vqa["per_kind"] and math.isclose(vqa["where_tolerance"], 0.1)
    (video,) = results["videos"]
    frames = [f for f in imageio.get_reader(video)]
    assert len(frames) == results["episode_results"][0]["steps"] + 1


def test_schema_check_catches_broken_results():
    good = {"schema_version": 1, "success_rate": 0.5, "episodes": 2, "ci95": [0.09, 0.91], "seed": 100000,
            "checkpoint": None, "vqa": None,
            "per_task": {"Reach": {"success_rate": 0.5, "episodes": 2, "ci95": [0.09, 0.91], "expert": None}}}
    evaluate.check_results(good)
    for key, value, message in (("ci95", [0.6, 0.9], "outside its interval"), ("episodes", 3, "per-task sum"),
                                ("per_task", {}, "non-empty"), ("seed", "x", "seed")):
        with pytest.raises(ValueError, match=message):
            evaluate.check_results({**good, key: value})
    with pytest.raises(ValueError, match="missing key 'vqa'"):
        evaluate.check_results({k: v for k, v in good.items() if k != "vqa"})


def test_parallel_environments_do_not_change_outcomes(checkpoint):
    policy = UIO2Policy(checkpoint, device="cpu", dtype="float32")
    seeds = [100000, 100001, 100002]
    runs = []
    for num_envs in (1, 3):
        cfg = load_config([f"eval.num_envs={num_envs}", "env.max_steps=8", "env.image_size=64", "eval.videos=0"])
        runs.append([(r.seed, r.success, r.steps) for r in evaluate.run_task(policy, "Reach", seeds, cfg)])
    assert runs[0] == runs[1]
