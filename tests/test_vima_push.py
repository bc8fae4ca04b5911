"""The VIMA-style Push task: "push the {obj} into the {zone}." with the push primitive, its oracle,
its success and failure checks, its prompt images and its place in the level partitions."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import uio_robot.envs.vima as vima
from uio_robot.envs.vima.env import VimaEnv
from uio_robot.envs.vima.tasks import Push, push_poses


@pytest.mark.parametrize("level", [1, 3])
def test_oracle_pushes_the_object_into_its_zone(level):
    env = gym.make("uio_robot/VimaPush-v0", level=level, image_size=32)
    for seed in (100000, 100001, 7):
        obs, info = env.reset(seed=seed)
        ep, scene = env.unwrapped.episode, env.unwrapped.scene
        (obj, zone), = ep.goal_in.items()
        assert not scene.in_base(obj, zone)
        oracle = env.unwrapped.expert()
        done, steps = False, 0
        while not done:
            action = oracle.act(obs)
            assert env.action_space.contains(action)
            obs, reward, terminated, truncated, info = env.step(action)
            done, steps = terminated or truncated, steps + 1
        assert info["is_success"] and reward == 1.0 and scene.in_base(obj, zone), (level, seed, steps)
        assert not any(scene.in_base(o, b) for o in ep.keep_out for b in ep.bases)
    env.close()


def test_a_push_the_wrong_way_is_not_a_success():
    env = VimaEnv("Push", level=1, image_size=32)
    env.reset(seed=100002)
    (obj, zone), = env.episode.goal_in.items()
    pos = env.scene.object_pos(obj)[:2]
    away = pos + (pos - env.scene.base_xy(zone)) / np.linalg.norm(pos - env.scene.base_xy(zone)) * 0.08
    start, end = push_poses(pos, away, env.scene.radius(obj))
    _, reward, terminated, _, info = env.step([start[0], start[1], 0.0, end[0], end[1], 0.0])
    moved = env.scene.object_pos(obj)[:2] - pos
    assert np.linalg.norm(moved) > 0.04  # the push happened, away from the zone
    assert not info["is_success"] and reward == 0.0 and not terminated
    assert not env.task.success(env)
    env.close()


def test_pushing_the_object_into_the_other_zone_is_a_failure():
    env = VimaEnv("Push", level=1, image_size=32)
    env.reset(seed=100003)
    ep, scene = env.episode, env.scene
    (obj, zone), = ep.goal_in.items()
    (other,) = [b for b in ep.bases if b != zone]
    scene.set_object_pose(obj, scene.base_xy(other))  # as if a push had ended there
    env.runner.hold(env._obs, 1.0, 5)
    assert scene.in_base(obj, other)
    assert env.task.failure(env) and not env.task.success(env)
    env.close()


def test_prompt_shows_the_object_and_the_zone():
    env = VimaEnv("Push", level=2, image_size=48)
    obs, _ = env.reset(seed=4)
    parts = vima.observation_prompt(obs)
    assert [p for p in parts if isinstance(p, str)] == ["push the", "into the", "."]
    images = [p for p in parts if not isinstance(p, str)]
    assert len(images) == 2 and all(i.shape == (48, 48, 3) and i.dtype == np.uint8 for i in images)
    assert images[0].std() > 5 and not np.array_equal(images[0], images[1])
    ep = env.episode
    (obj, zone), = ep.goal_in.items()
    np.testing.assert_array_equal(images[0], env.scene.studio_image(obj, ep.objects[obj], 48))
    np.testing.assert_array_equal(images[1], env.scene.studio_image(zone, ep.bases[zone], 48))
    env.close()


def test_levels_and_bad_specs():
    assert "uio_robot/VimaPush-v0" in vima.ENV_IDS
    assert all("Push" in vima.level_tasks(lv) for lv in ("train", 1, 2, 3)) and "Push" not in vima.level_tasks(4)
    spec = {"shapes": ["cube"], "colours": ["red", "green"], "base_kinds": ["bin"], "base_colours": ["blue", "pink"]}
    env = VimaEnv("Push", image_size=16)
    with pytest.raises(ValueError, match="base_kinds must be \\[pad\\]"):
        Push().sample(np.random.default_rng(0), spec, env.scene)
    env.close()
