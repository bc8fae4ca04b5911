"""The MuJoCo tabletop suite: gymnasium API, determinism, experts, success checks, errors."""

import os
import shutil
import subprocess
import sys
import warnings
from functools import partial

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import uio_robot.envs as suite
from uio_robot.envs import ENV_IDS, TASKS, SceneError, TabletopEnv
from uio_robot.envs.expert_eval import evaluate_expert
from uio_robot.envs.scene import ARM_JOINTS, ASSETS, COLOURS, SHAPES
from uio_robot.envs.tabletop_env import ACTION_HIGH, ACTION_LOW


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env_is_clean(env_id):
    env = gym.make(env_id, image_size=64, render_mode="rgb_array", render_size=64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []
    obs, info = env.reset(seed=3)
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert obs["wrist_image"].shape == (64, 64, 3)
    assert obs["state"].shape == (len(suite.STATE_NAMES),) and obs["state"].dtype == np.float32
    assert info == {"is_success": False}
    assert env.spec.max_episode_steps == TASKS[env_id.split("/")[1][:-3]].max_episode_steps
    env.close()


def test_every_instruction_fits_the_text_space():
    env = TabletopEnv("Reach", images=())
    space = env.observation_space["instruction"]
    names = [f"{c} {s}" for c in COLOURS for s in SHAPES]
    for task in TASKS.values():
        for template in task.templates:
            for a in names:
                text = template.format(obj=a, top=a, base=names[-1])
                assert space.contains(text), (task.name, text)


def _rollout(env_id, seed, actions):
    env = gym.make(env_id, image_size=64)
    obs, _ = env.reset(seed=seed)
    frames = [obs["image"], obs["wrist_image"]]
    for a in actions:
        obs, *_ = env.step(a)
        frames += [obs["image"], obs["wrist_image"]]
    scene = env.unwrapped.scene_info()
    env.close()
    return frames, obs["state"], scene


def test_reset_and_action_sequence_are_deterministic():
    actions = np.random.default_rng(0).uniform(ACTION_LOW, ACTION_HIGH, size=(12, 5)).astype(np.float32)
    f1, s1, scene1 = _rollout("uio_robot/Stack-v0", 7, actions)
    f2, s2, scene2 = _rollout("uio_robot/Stack-v0", 7, actions)
    assert all(np.array_equal(a, b) for a, b in zip(f1, f2))
    np.testing.assert_array_equal(s1, s2)
    assert scene1 == scene2
    f3, _, scene3 = _rollout("uio_robot/Stack-v0", 8, actions[:0])
    assert not np.array_equal(f1[0], f3[0])
    assert scene1["objects"] != scene3["objects"]


@pytest.mark.parametrize("task", list(TASKS))
def test_expert_succeeds_quick(task):
    report = evaluate_expert(task, range(1000, 1012))
    assert report.rate >= 0.9, f"{task}: {report.successes}/{report.episodes}, failed {report.failed_seeds}"
    assert max(report.steps) <= TASKS[task].max_episode_steps


@pytest.mark.parametrize("task", list(TASKS))
def test_zero_policy_does_not_succeed(task):
    env = TabletopEnv(task, images=())
    for seed in range(3):
        env.reset(seed=seed)
        for _ in range(env.task.max_episode_steps):
            _, reward, terminated, _, info = env.step(np.zeros(5, np.float32))
            assert not info["is_success"] and not terminated and reward == 0.0


def test_images_change_when_an_object_moves():
    still, moved = TabletopEnv("Reach"), TabletopEnv("Reach")
    obs_still, _ = still.reset(seed=5)
    moved.reset(seed=5)
    target = moved.slot(moved.episode.target)
    moved.data.qpos[target.qpos_adr + 1] += 0.12 if moved.object_pos(target.name)[1] < 0 else -0.12
    zero = np.zeros(5, np.float32)
    obs_still, *_ = still.step(zero)
    obs_moved, *_ = moved.step(zero)
    diff = np.abs(obs_still["image"].astype(int) - obs_moved["image"].astype(int)).sum(axis=2)
    assert (diff > 30).sum() > 40  # the object left one place and appeared at another
    np.testing.assert_allclose(obs_still["state"], obs_moved["state"], atol=1e-3)


@pytest.mark.parametrize(
    "action, message",
    [
        (np.zeros(4), "expected shape"),
        (np.zeros((1, 5)), "expected shape"),
        (np.array([0, 0, np.nan, 0, 0]), "non-finite values in \\['dz'\\]"),
        (np.array([0, 0, 0, np.inf, 0]), "dyaw"),
        ("left", "cannot convert"),
    ],
)
def test_invalid_actions_raise_clear_errors(action, message):
    env = TabletopEnv("Reach", images=())
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(action)


def test_out_of_range_actions_are_clipped_and_joint_limits_hold():
    env = TabletopEnv("Reach", images=())
    env.reset(seed=0)
    ranges = env.model.jnt_range[[env.model.joint(j).id for j in ARM_JOINTS]]
    for direction in ([10, 10, 10, 10, 1], [-10, -10, -10, -10, -1], [10, -10, -10, 10, 1]):
        for _ in range(40):
            obs, *_ = env.step(np.array(direction, np.float32))
            q = obs["state"][5:]
            assert np.all(q >= ranges[:, 0] - 1e-3) and np.all(q <= ranges[:, 1] + 1e-3)
    assert np.all(np.abs(obs["state"][:3]) < 1.0)


def test_broken_scene_xml_names_the_file(tmp_path):
    for name in ("tabletop.xml", "arm.xml"):
        shutil.copy(ASSETS / name, tmp_path / name)
    broken = tmp_path / "tabletop.xml"
    broken.write_text(broken.read_text().replace('<body name="cube_0"', '<body nmae="cube_0"', 1))
    with pytest.raises(SceneError, match=str(broken)):
        TabletopEnv("Reach", scene_xml=broken)
    no_bin = tmp_path / "no_bin.xml"
    no_bin.write_text((ASSETS / "tabletop.xml").read_text().replace('name="bin"', 'name="crate"'))
    with pytest.raises(SceneError, match="no_bin.xml lacks the body 'bin'"):
        TabletopEnv("Reach", scene_xml=no_bin)
    with pytest.raises(SceneError, match="not found"):
        TabletopEnv("Reach", scene_xml=tmp_path / "missing.xml")


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="unknown task"):
        TabletopEnv("Juggle")
    with pytest.raises(ValueError, match="image_size"):
        TabletopEnv("Reach", image_size=4)
    with pytest.raises(ValueError, match="unknown image keys"):
        TabletopEnv("Reach", images=("depth",))


def test_render_and_visual_options():
    env = TabletopEnv("PickPlace", image_size=64, render_mode="rgb_array", render_size=96)
    obs, _ = env.reset(seed=2)
    frame = env.render()
    assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8
    fancy = TabletopEnv("PickPlace", image_size=64, shadows=True, multisample=True)
    assert not np.array_equal(fancy.reset(seed=2)[0]["image"], obs["image"])
    jittered = TabletopEnv("PickPlace", image_size=64, randomize=True)
    a = jittered.reset(seed=2)[0]["image"]
    assert not np.array_equal(a, obs["image"])
    assert np.array_equal(a, jittered.reset(seed=2)[0]["image"])  # randomization is seeded too


def test_scene_info_describes_the_episode():
    env = TabletopEnv("PickByDescription", images=())
    env.reset(seed=4)
    info = env.scene_info()
    target = next(o for o in info["objects"] if o["name"] == info["target"])
    assert target["description"] in info["instruction"]
    # the distractors share the target's colour or shape, so both words are needed
    assert any(o["shape"] == target["shape"] and o is not target for o in info["objects"])
    assert any(o["colour"] == target["colour"] and o is not target for o in info["objects"])
    for o in info["objects"]:
        assert 0.3 < o["position"][0] < 0.7 and abs(o["position"][2] - o["half_extents"][2]) < 2e-3
        np.testing.assert_allclose(o["rgba"][:3], COLOURS[o["colour"]])


def test_async_vector_env_runs_two_envs():
    # "spawn": a forked child of a process that already rendered would inherit a broken EGL state;
    # the "module:id" form registers the ids in the fresh child process.
    make = partial(gym.make, "uio_robot.envs:uio_robot/PickPlace-v0", image_size=48)
    vec = gym.vector.AsyncVectorEnv([make] * 2, context="spawn")
    try:
        obs, infos = vec.reset(seed=[0, 1])
        assert obs["image"].shape == (2, 48, 48, 3) and obs["state"].shape == (2, len(suite.STATE_NAMES))
        assert not np.array_equal(obs["image"][0], obs["image"][1])
        for _ in range(3):
            obs, reward, terminated, truncated, infos = vec.step(vec.action_space.sample())
        assert obs["wrist_image"].shape == (2, 48, 48, 3) and infos["is_success"].shape == (2,)
        assert len(obs["instruction"]) == 2
    finally:
        vec.close()


def test_package_sets_mujoco_gl_when_unset():
    code = (
        "import os; assert 'MUJOCO_GL' not in os.environ\n"
        "import uio_robot.envs as e\n"
        "env = e.TabletopEnv('Reach', image_size=32); obs, _ = env.reset(seed=0)\n"
        "print(os.environ['MUJOCO_GL'], obs['image'].std() > 0)"
    )
    env = {k: v for k, v in os.environ.items() if k != "MUJOCO_GL"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["egl", "True"]


@pytest.mark.parametrize("task", ["PickPlace", "Push"])
def test_layouts_do_not_overlap_and_keep_the_push_path_clear(task):
    env = TabletopEnv(task, images=())
    for seed in range(25):
        env.reset(seed=seed)
        info = env.scene_info()
        fixtures = [(np.array(info["container"]["position"][:2]), 0.12)] if info["container"] else []
        fixtures += [(np.array(info["zone"]["position"][:2]), 0.07)] if info["zone"] else []
        things = fixtures + [(np.array(o["position"][:2]), env.slot(o["name"]).radius) for o in info["objects"]]
        for i, (p, r) in enumerate(things):
            for q, s in things[i + 1:]:
                assert np.linalg.norm(p - q) >= r + s, (seed, p, q)
        if task == "Push":
            target = env.object_pos(info["target"])[:2]
            zone = np.array(info["zone"]["position"][:2])
            other = next(np.array(o["position"][:2]) for o in info["objects"] if o["name"] != info["target"])
            t = np.clip((other - target) @ (zone - target) / np.sum((zone - target) ** 2), 0, 1)
            assert np.linalg.norm(target + t * (zone - target) - other) > 0.08, seed
