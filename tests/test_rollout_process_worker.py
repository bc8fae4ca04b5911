"""`loop.worker=process` from the commands that read the config: `uio-robot rollout` runs its episode and
answers its question with the policy in a spawned child, and ros-agent's policy construction gives a
recipe that a child builds into the same policy. Real MuJoCo, real child processes, a tiny random-weight
UIO2 checkpoint (tests/tiny_policy.py)."""

import json
import multiprocessing
import pickle
import time

import numpy as np
import pytest
import torch
from tiny_policy import make_tiny_checkpoint

from uio_robot.agent import rollout
from uio_robot.agent.config import load_config
from uio_robot.agent.loop import make_worker
from uio_robot.agent.policy_recipe import PolicyRecipe, describe_policy, policy_recipe_from_config
from uio_robot.agent.process_worker import ProcessWorker
from uio_robot.bridges.ros.agent_node import blank_observation, build_policy_for
from uio_robot.bridges.ros.ros_robot import RosRobot
from uio_robot.policies.simple import RandomPolicy
from uio_robot.policies.uio2_policy import UIO2Policy


@pytest.fixture(autouse=True)
def keep_threads():
    """policy.threads changes torch's process-wide thread count when built here; restore it afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "tiny", chunk=4, history=1)


def test_rollout_with_the_process_worker_runs_and_answers(tiny, tmp_path, capsys):
    torch.set_num_threads(2)  # the child sets its own (policy.threads=1); this process must keep 2
    out = tmp_path / "out"
    rc = rollout.main(["env.task=uio_robot/Reach-v0", "env.seed=3", f"policy.checkpoint={tiny}", "policy.device=cpu",
                       "policy.threads=1", "env.max_steps=60", "env.image_size=64", "loop.worker=process",
                       f"out_dir={out}"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    result = json.loads((out / "Reach_seed3.json").read_text())
    assert result["worker"] == "process" and "(process worker)" in printed
    assert result["policy"] == "uio2" and result["checkpoint"] == str(tiny)
    telemetry = result["telemetry"]
    assert result["steps"] == telemetry["ticks"] and 1 <= result["steps"] <= 60
    assert telemetry["sources"].get("chunk", 0) > 0, telemetry  # the child's chunks drove the arm
    assert result["question"] and isinstance(result["answer"], str) and result["answer"], result
    assert result["query_latency_ms"] > 0
    assert (out / "Reach_seed3.mp4").stat().st_size > 0
    assert torch.get_num_threads() == 2  # the model was built in the child, not here
    assert not multiprocessing.active_children()  # the child was stopped and reaped


def test_describe_policy_reads_what_the_built_policy_uses(tiny, tmp_path):
    cfg = load_config([f"policy.checkpoint={tiny}", "policy.device=cpu", "policy.threads=1"])
    facts = describe_policy(cfg.policy)
    built = UIO2Policy(tiny, device="cpu")
    assert (facts.directory, facts.chunk, facts.period) == (built.directory, built.format.chunk, built.period)
    assert facts.chunk == 4
    assert describe_policy(load_config(["policy.kind=random"]).policy).chunk is None
    not_a_checkpoint = load_config([f"policy.checkpoint={tmp_path}"]).policy
    assert describe_policy(not_a_checkpoint).chunk is None  # building it names the problem instead


def test_recipe_from_config_carries_the_config_to_the_factory():
    cfg = load_config(["policy.kind=random", "loop.rate_hz=10", "loop.replan_every=3", "env.seed=7"])
    spec = RosRobot.specs(cfg.ros)
    policy = policy_recipe_from_config(cfg, *spec).build()
    assert isinstance(policy, RandomPolicy) and policy.horizon == 5 and policy.period == pytest.approx(0.1)
    assert policy.seed == 7


def test_ros_agent_with_the_process_worker_gets_a_recipe_a_child_builds(tiny, tmp_path):
    overrides = [f"policy.checkpoint={tiny}", "policy.device=cpu", "policy.threads=1", "loop.replan_every=9"]
    cfg = load_config([*overrides, "loop.worker=process"])
    action_spec, state_spec = RosRobot.specs(cfg.ros)
    recipe = build_policy_for(cfg, action_spec, state_spec)
    assert isinstance(recipe, PolicyRecipe)
    assert cfg.loop.replan_every == 2  # fitted to the 4-step chunks from the checkpoint's metadata

    in_process = build_policy_for(load_config(overrides), action_spec, state_spec)  # the thread worker's
    assert isinstance(in_process, UIO2Policy)
    obs = blank_observation(cfg.ros, state_spec)
    obs.images = {"image": np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)}
    obs.state, obs.timestamp = np.linspace(-0.2, 0.2, state_spec.dim, dtype=np.float32), 1.0
    chunk = act_in_child(recipe, obs)
    assert chunk.shape == (4, action_spec.dim)
    np.testing.assert_allclose(chunk, in_process.act(obs).actions, atol=1e-6)  # the same policy


def test_ros_pace_auto_slows_the_loop_to_what_a_request_takes(tiny, caplog):
    from uio_robot.agent.config import ConfigError

    overrides = [f"policy.checkpoint={tiny}", "policy.device=cpu", "policy.threads=1", "loop.rate_hz=500"]
    real = load_config(overrides)
    build_policy_for(real, *RosRobot.specs(real.ros))
    assert real.loop.rate_hz == 500 and real.loop.act_wait_s == 0  # ros.pace=real: as given
    cfg = load_config([*overrides, "ros.pace=auto", "loop.replan_every=9"])
    with caplog.at_level("INFO"):
        policy = build_policy_for(cfg, *RosRobot.specs(cfg.ros))
    period = 1 / cfg.loop.rate_hz
    assert 0.002 < period < 5  # no request takes under 2 ms: the tick was lengthened
    assert cfg.loop.act_wait_s == pytest.approx(0.85 * period) and cfg.policy.period_s == pytest.approx(period)
    assert isinstance(policy, UIO2Policy) and policy.period == pytest.approx(period)
    assert cfg.loop.replan_every == 4  # at most the chunk: each chunk plays from row 0
    assert "pace: a request takes up to" in caplog.text
    with pytest.raises(ConfigError, match="ros.pace"):
        load_config(["ros.pace=fast"])


def test_the_child_resets_the_policy_after_its_warm_up(tmp_path):
    """A replayed recording starts at its first row on the first observation after a reset; had the
    warm-up call (t=0) been kept, the observation at t=1 s would be 20 rows into it."""
    recorded = np.linspace(-0.04, 0.04, 40 * 5, dtype=np.float32).reshape(40, 5)
    np.save(tmp_path / "actions.npy", recorded)
    cfg = load_config(["policy.kind=replay", f"policy.checkpoint={tmp_path / 'actions.npy'}", "loop.worker=process",
                       "loop.replan_every=2"])
    action_spec, state_spec = RosRobot.specs(cfg.ros)
    obs = blank_observation(cfg.ros, state_spec)
    obs.timestamp = 1.0
    np.testing.assert_array_equal(act_in_child(build_policy_for(cfg, action_spec, state_spec), obs), recorded[:4])


def act_in_child(recipe: PolicyRecipe, obs) -> np.ndarray:
    """One chunk from the policy `recipe` builds in a ProcessWorker's child; the child is stopped after."""
    pickle.dumps(recipe)
    worker = ProcessWorker(recipe).start()
    try:
        worker.submit_control(obs)
        deadline = time.monotonic() + 60
        while (result := worker.take_control_result()) is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.stop()
    assert worker._process.exitcode == 0
    assert result is not None and result.error is None, result
    return result.chunk.actions


def test_blank_observation_fits_the_configured_cameras_and_state():
    cfg = load_config(["ros.image_height=48", "ros.image_width=40", "ros.instruction=reach the ball"])
    state_spec = RosRobot.specs(cfg.ros)[1]
    obs = blank_observation(cfg.ros, state_spec).validate(state_spec.dim)
    assert set(obs.images) == set(cfg.ros.cameras) and obs.images["image"].shape == (48, 40, 3)
    assert obs.instruction == "reach the ball" and obs.state.shape == (state_spec.dim,)


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_reset_policy_reaches_the_policy_in_either_worker(tmp_path, kind):
    """A replayed recording follows the clock: 1 s after its first observation it is 20 rows in. After
    `reset_policy()` the next request starts again at the first row, in the thread and in the child."""
    recorded = np.linspace(-0.04, 0.04, 60 * 5, dtype=np.float32).reshape(60, 5)
    np.save(tmp_path / "actions.npy", recorded)
    cfg = load_config(["policy.kind=replay", f"policy.checkpoint={tmp_path / 'actions.npy'}", f"loop.worker={kind}",
                       "loop.replan_every=2"])
    action_spec, state_spec = RosRobot.specs(cfg.ros)
    worker = make_worker(policy_recipe_from_config(cfg, action_spec, state_spec), cfg.loop)
    try:
        rows = []
        for t, reset in ((1.0, False), (2.0, False), (3.0, True)):
            if reset:
                worker.reset_policy()
            obs = blank_observation(cfg.ros, state_spec)
            obs.timestamp = t
            worker.submit_control(obs)
            deadline = time.monotonic() + 60
            while (result := worker.take_control_result()) is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert result is not None and result.error is None, result
            rows.append(result.chunk.actions)
    finally:
        worker.stop()
    np.testing.assert_array_equal(rows[0], recorded[:4])
    np.testing.assert_array_equal(rows[1], recorded[20:24])
    np.testing.assert_array_equal(rows[2], recorded[:4])  # reset: a new episode starts at the first row
