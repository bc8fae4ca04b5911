"""The VIMA-Bench adapter against real recorded VIMA-Bench episodes (VIMA-Bench itself not needed)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from uio_robot.envs.vima.prompt import observation_prompt
from uio_robot.envs.vima_bench import (
    ACTION_HIGH,
    ACTION_LOW,
    VimaBenchEnv,
    VimaBenchMissing,
    action_to_vector,
    convert_observation,
    convert_prompt,
    vector_to_action,
)
from uio_robot.envs.vima_bench.convert import quat_to_yaw
from uio_robot.envs.vima_bench.recorded import ReplayVimaBenchEnv, list_episodes, load_episode
from uio_robot.policies.codec import NUM_BINS
from uio_robot.policies.vima_prompts import multimodal_prompt, primitive_codec


@pytest.fixture(scope="module")
def samples(shared_dir):
    return shared_dir / "vima_bench_samples"


@pytest.fixture(scope="module")
def episodes(samples):
    folders = list_episodes(samples)
    assert len(folders) == 59
    return [load_episode(f) for f in folders]


@pytest.fixture(scope="module")
def codec():
    return primitive_codec(ACTION_LOW, ACTION_HIGH)


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_observations_match_the_recorded_images(episodes):
    seen_tasks = set()
    for ep in episodes:
        for t, entry in enumerate(ep.meta["observations"]):
            raw = ep.observation(t)
            assert raw["rgb"]["front"].shape == (3, 128, 256)  # VIMA-Bench's own CHW layout
            obs = convert_observation(raw)
            assert obs["image"].shape == obs["top_image"].shape == (128, 256, 3)
            np.testing.assert_array_equal(obs["image"], _png(ep.folder / entry["rgb"]["front"]))
            np.testing.assert_array_equal(obs["top_image"], _png(ep.folder / entry["rgb"]["top"]))
            for view in ("front", "top"):
                mask = obs[f"segm_{view}"]
                np.testing.assert_array_equal(mask, _png(ep.folder / entry["segm"][view]))
                assert sorted(np.unique(mask).tolist()) == entry["segm_ids_present"][view]
            assert obs["ee"] == entry["ee"] == (ep.meta["meta_info"]["end_effector_type"] == "spatula")
        seen_tasks.add(ep.task)
    assert len(seen_tasks) == 17


def test_top_view_orientation_matches_object_positions(episodes):
    """Rows grow with x, columns with y (about 4 mm per pixel): the converted image is not flipped."""
    residuals = []
    for ep in episodes[:20]:
        obs = convert_observation(ep.observation(0))
        for body, pose in ep.meta["observations"][0]["privileged_object_poses"].items():
            if pose["category"] != "rigid":
                continue
            rows, cols = np.nonzero(obs["segm_top"] == int(body))
            if rows.size < 20:
                continue
            x, y = pose["position"][:2]
            residuals.append((rows.mean() - (247 * x - 60), cols.mean() - (251 * y + 128.5)))
    residuals = np.abs(np.array(residuals))
    assert len(residuals) > 30
    assert np.median(residuals, axis=0).max() < 4.0


def test_prompt_assembly_puts_the_assets_where_the_placeholders_are(episodes):
    for ep in episodes:
        prompt, assets = ep.prompt_and_assets()
        parts = convert_prompt(prompt, assets)
        images = [p for p in parts if not isinstance(p, str)]
        order = ep.meta["placeholders_in_prompt_order"]
        assert len(images) == len(order)
        for name, image in zip(order, images):
            asset = ep.meta["prompt_assets"][name]
            view = "front" if asset["placeholder_type"] == "object" else "top"
            np.testing.assert_array_equal(image, _png(ep.folder / asset["rgb"][view]))
        # the words are the prompt's, in order, with the placeholders taken out
        text = " ".join(p for p in parts if isinstance(p, str))
        expected = prompt
        for name in order:
            expected = expected.replace("{" + name + "}", " ", 1)
        assert text.split() == expected.split()
        # UIO2 encoding: images into the history, history tokens where they were
        encoded, history = multimodal_prompt(parts, max_images=8)
        assert len(history) == len(order)
        assert [w for w in encoded.split() if w.startswith("<image_history_")] == \
            [f"<image_history_{i}>" for i in range(1, len(order) + 1)]


def test_prompt_view_choice_and_missing_asset(episodes):
    ep = next(e for e in episodes if e.task == "visual_manipulation")
    prompt, assets = ep.prompt_and_assets()
    top = convert_prompt(prompt, assets, view="top")
    name = ep.meta["placeholders_in_prompt_order"][0]
    np.testing.assert_array_equal(top[1], _png(ep.folder / ep.meta["prompt_assets"][name]["rgb"]["top"]))
    del assets[name]
    with pytest.raises(ValueError, match=name):
        convert_prompt(prompt, assets)


def test_oracle_actions_round_trip_through_bins_within_one_bin(episodes, codec):
    bin_width = (ACTION_HIGH - ACTION_LOW) / (NUM_BINS - 1)
    n = 0
    for ep in episodes:
        for t in range(ep.n_steps):
            recorded = ep.action(t)
            vector = action_to_vector(recorded)
            bins = codec.encode_actions(vector[None])
            assert bins.shape == (6,) and bins.min() >= 0 and bins.max() < NUM_BINS
            decoded = codec.decode_actions(bins)[0]
            back = vector_to_action(decoded)
            assert all(v.dtype == np.float32 for v in back.values())
            for pose in ("pose0", "pose1"):
                err = np.abs(back[f"{pose}_position"] - recorded[f"{pose}_position"])
                assert np.all(err <= bin_width[:2] + 1e-6), (ep.folder, t, pose, err)
                yaw_err = quat_to_yaw(back[f"{pose}_rotation"]) - quat_to_yaw(recorded[f"{pose}_rotation"])
                yaw_err = abs((yaw_err + np.pi) % (2 * np.pi) - np.pi)
                assert yaw_err <= bin_width[2] + 1e-6, (ep.folder, t, pose, yaw_err)
                q, r = back[f"{pose}_rotation"], recorded[f"{pose}_rotation"]
                assert min(np.abs(q - r).max(), np.abs(q + r).max()) <= bin_width[2] / 2 + 1e-6
            np.testing.assert_array_equal(codec.encode_actions(action_to_vector(back)[None]), bins)
            n += 1
    assert n == 113  # 101 pick-and-place + 12 push steps


def test_replay_through_the_gym_wrapper_with_decoded_actions(episodes, codec):
    for ep in episodes[::6]:
        env = VimaBenchEnv(env=ReplayVimaBenchEnv(ep))
        obs, info = env.reset(seed=ep.seed)
        assert isinstance(observation_prompt(obs)[0], (str, np.ndarray))
        assert obs["instruction"] == ep.meta["prompt"]
        for t in range(ep.n_steps):
            bins = codec.encode_actions(action_to_vector(ep.action(t))[None])
            obs, reward, terminated, truncated, info = env.step(codec.decode_actions(bins)[0])
        assert terminated and info["is_success"] and not info["failure"]
        np.testing.assert_array_equal(obs["image"], _png(ep.folder / ep.meta["observations"][-1]["rgb"]["front"]))


def test_non_oracle_episodes_report_failure(samples):
    root = samples / "extras_non_oracle" / "visual_manipulation"
    wrong = load_episode(root / "L1_placement_generalization_seed100_distractor_to_base")
    env = VimaBenchEnv(env=ReplayVimaBenchEnv(wrong))
    env.reset()
    _, _, terminated, _, info = env.step(action_to_vector(wrong.action(0)))
    assert terminated and info["failure"] and not info["is_success"]
    rand = load_episode(root / "L1_placement_generalization_seed100_random")
    env = VimaBenchEnv(env=ReplayVimaBenchEnv(rand))
    env.reset()
    for t in range(rand.n_steps):
        _, _, terminated, truncated, info = env.step(action_to_vector(rand.action(t)))
    assert not terminated and truncated and not info["is_success"]
    with pytest.raises(ValueError, match="differs from the recorded"):
        env.reset()
        env.step(np.array([0.5, 0.0, 0.0, 0.5, 0.0, 0.0]))


def test_missing_vima_bench_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vima_bench", None)  # `import vima_bench` now fails
    with pytest.raises(VimaBenchMissing, match="not installed.*not on PyPI"):
        VimaBenchEnv("visual_manipulation", level=1)


def test_bad_actions_and_observations_are_rejected():
    good = vector_to_action(np.array([0.5, 0.0, 0.1, 0.6, 0.1, -0.2]))
    with pytest.raises(ValueError, match="unknown \\['extra'\\]"):
        action_to_vector({**good, "extra": np.zeros(2)})
    with pytest.raises(ValueError, match="pose1_rotation 4"):
        action_to_vector({**good, "pose1_rotation": np.zeros(3)})
    with pytest.raises(ValueError, match="non-finite"):
        vector_to_action(np.array([np.nan, 0, 0, 0.5, 0, 0]))
    with pytest.raises(ValueError, match="6 values"):
        vector_to_action(np.zeros(5))
    clipped = vector_to_action(np.array([2.0, -3.0, 0.0, 0.5, 0.0, 0.0]))
    np.testing.assert_allclose(clipped["pose0_position"], [0.75, -0.5])
    with pytest.raises(ValueError, match="rgb.front"):
        convert_observation({"rgb": {"front": np.zeros((128, 256, 3), np.uint8),
                                     "top": np.zeros((3, 128, 256), np.uint8)}, "ee": 0})
