"""Native VIMA-style tasks on the MuJoCo suite: partitions, prompts, primitives, oracles, checks."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import uio_robot.envs.vima as vima
from uio_robot.envs.vima.env import VimaEnv
from uio_robot.envs.vima.expert_eval import evaluate_oracle
from uio_robot.envs.vima.partitions import load_partition


def test_partitions_describe_the_four_levels():
    train = load_partition("train")["tasks"]
    levels = {lv: load_partition(lv) for lv in vima.LEVELS}
    assert [levels[lv]["name"] for lv in vima.LEVELS] == [
        "placement_generalization", "combinatorial_generalization", "novel_object_generalization",
        "novel_task_generalization"]
    assert levels[1]["tasks"] == train  # L1: the training spec, new placements only
    for task, spec in levels[2]["tasks"].items():  # L2: same shapes, the two colour sets swapped
        assert spec["shapes"] == train[task]["shapes"]
        assert not set(spec["colours"]) & set(train[task]["colours"])
        if "base_colours" in spec:
            assert spec["colours"] == train[task]["base_colours"] and spec["base_colours"] == train[task]["colours"]
    train_shapes = {s for spec in train.values() for s in spec["shapes"]}
    for spec in levels[3]["tasks"].values():  # L3: shapes never seen in training
        assert not set(spec["shapes"]) & train_shapes
    assert not set(levels[4]["tasks"]) & set(train)  # L4: tasks never seen in training
    assert {"SameShape", "SameColour", "Rearrange", "VisualManipulation", "NovelNoun"} <= set(vima.TASKS)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"tasks": {"Fly": {}}}), "unknown task 'Fly'"),
    (json.dumps({"tasks": {"Rearrange": {"shapes": ["cube"], "colours": ["red"], "size": [1]}}}), "unknown keys"),
    (json.dumps({"tasks": {"Rearrange": {"shapes": ["pyramid"], "colours": ["red"]}}}), "pyramid"),
])
def test_bad_partition_files_are_named(tmp_path, content, message):
    (tmp_path / "L2.json").write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        load_partition(2, directory=tmp_path)
    assert "L2.json" in str(err.value)
    with pytest.raises(ValueError, match="level must be 1-4"):
        load_partition(7)


def test_registered_env_observation_and_prompt():
    env = gym.make("uio_robot/VimaVisualManipulation-v0", level=1, image_size=64)
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    assert obs["image"].shape == obs["top_image"].shape == (64, 64, 3)
    parts = vima.observation_prompt(obs)
    images = [p for p in parts if not isinstance(p, str)]
    assert [p for p in parts if isinstance(p, str)] == ["put the", "into the", "."]
    assert len(images) == 2 and all(i.shape == (64, 64, 3) and i.dtype == np.uint8 for i in images)
    assert images[0].std() > 5 and not np.array_equal(images[0], images[1])  # something is in the pictures
    again, _ = env.reset(seed=3)
    for key in ("image", "top_image"):
        np.testing.assert_array_equal(obs[key], again[key])
    np.testing.assert_array_equal(obs["prompt_assets"]["dragged_obj"], again["prompt_assets"]["dragged_obj"])
    env.close()


def test_goal_scene_prompt_shows_the_goal_layout():
    env = VimaEnv("Rearrange", image_size=64)
    obs, _ = env.reset(seed=5)
    goal = obs["prompt_assets"]["scene"]
    assert not np.array_equal(goal, obs["top_image"])  # two objects are elsewhere in the goal
    oracle = env.expert()
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(oracle.act(obs))
        done = terminated or truncated
    assert info["is_success"]
    # after rearranging, the top view is close to the goal image (objects where the goal shows them)
    diff_after = np.abs(obs["top_image"].astype(int) - goal.astype(int)).mean()
    env.reset(seed=5)
    diff_before = np.abs(env._observation()["top_image"].astype(int) - goal.astype(int)).mean()
    assert diff_after < 0.6 * diff_before
    env.close()


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_oracles_succeed_on_every_task_of_each_level(level):
    for task in vima.level_tasks(level):
        report = evaluate_oracle(task, level, range(100000, 100003), image_size=32)
        assert report.successes == report.episodes == 3, (task, level, report.failed_seeds)


def test_wrong_object_into_the_base_is_a_failure():
    env = VimaEnv("VisualManipulation", image_size=32)
    env.reset(seed=11)
    ep, scene = env.episode, env.scene
    (distractor,) = ep.keep_out
    (base,) = ep.goal_in.values()
    pos, target = scene.object_pos(distractor), scene.base_xy(base)
    yaw = env.task.oracle(env)[2] if scene.objects[distractor].kind == "cube" else 0.0
    _, reward, terminated, truncated, info = env.step([pos[0], pos[1], 0.0, target[0], target[1], yaw])
    assert scene.in_base(distractor, base)
    assert terminated and info["failure"] and not info["is_success"] and reward == 0.0
    env.close()


def test_grasping_nothing_moves_nothing_and_the_budget_truncates():
    env = VimaEnv("VisualManipulation", image_size=32)
    env.reset(seed=12)
    before = {o: env.scene.object_pos(o) for o in env.episode.objects}
    empty = np.array([0.27, -0.38, 0.0, 0.7, 0.38, 0.0])  # a table corner where nothing stands
    for i in range(env.episode.max_steps):
        _, _, terminated, truncated, info = env.step(empty)
        assert not terminated and truncated == (i == env.episode.max_steps - 1)
    for o, p in before.items():
        assert np.linalg.norm(env.scene.object_pos(o)[:2] - p[:2]) < 0.005
    env.close()


def test_push_primitive_moves_the_object_along_the_line():
    env = VimaEnv("VisualManipulation", image_size=32)
    env.reset(seed=13)
    obj = next(iter(env.episode.goal_in))
    start = env.scene.object_pos(obj)
    r = env.scene.radius(obj)
    u = np.array([1.0, 0.0]) if start[0] < 0.5 else np.array([-1.0, 0.0])
    pose0 = [*(start[:2] - u * (r + 0.03)), 0.0]
    pose1 = [*(start[:2] + u * 0.06), 0.0]
    env.runner.push(env._obs, pose0, pose1)
    moved = env.scene.object_pos(obj)[:2] - start[:2]
    assert moved @ u > 0.03 and abs(moved[1] * u[0] - moved[0] * u[1]) < 0.03
    env.close()


def test_bad_actions_and_arguments():
    env = VimaEnv("SameShape", image_size=32)
    env.reset(seed=1)
    with pytest.raises(ValueError, match="expected shape"):
        env.step(np.zeros(5))
    with pytest.raises(ValueError, match="non-finite.*pose1_y"):
        env.step([0.5, 0, 0, 0.5, np.nan, 0])
    env.close()
    with pytest.raises(ValueError, match="not part of level L4"):
        VimaEnv("SameShape", level=4)
    with pytest.raises(ValueError, match="unknown VIMA task"):
        VimaEnv("Juggle")
