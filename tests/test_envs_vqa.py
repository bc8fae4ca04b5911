"""VQA ground truth: answers on a hand-made scene, projection against rendered pixels, determinism, split."""

import mujoco
import numpy as np
import pytest

from uio_robot.envs import TabletopEnv
from uio_robot.envs.vqa import episode_vqa, project, split_of, vqa_pairs

# The front camera of the shipped scene: at (0.95, 0, 0.5), looking back at the robot and down.
_xaxis = np.array([0.0, 1.0, 0.0])
_yaxis = np.array([-0.4, 0.0, 0.5]) / np.linalg.norm([-0.4, 0.0, 0.5])
CAMERA = {
    "position": [0.95, 0.0, 0.5],
    "xmat": np.stack([_xaxis, _yaxis, np.cross(_xaxis, _yaxis)], axis=1).reshape(-1).tolist(),
    "fovy_deg": 52.0, "width": 128, "height": 128,
}


def _obj(name, colour, shape, x, y):
    return {"name": name, "colour": colour, "shape": shape, "description": f"{colour} {shape}",
            "position": [x, y, 0.02]}


KNOWN = {
    "camera": CAMERA,
    "objects": [
        _obj("cube_0", "red", "cube", 0.45, -0.15),
        _obj("ball_0", "blue", "ball", 0.62, 0.15),
        _obj("cube_1", "green", "cube", 0.45, 0.0),
    ],
}


def _answers(pairs):
    return {p["question"]: p["answer"] for p in pairs}


def test_answers_on_a_known_scene():
    qa = _answers(vqa_pairs(KNOWN, np.random.default_rng(0)))
    assert qa["what colour is the ball?"] == "blue"
    assert "what colour is the cube?" not in qa  # two cubes: the question would be ambiguous
    assert qa["what shape is the red object?"] == "cube"
    assert qa["how many objects are on the table?"] == "3"
    assert qa["how many cubes are there?"] == "2"
    assert qa["how many cylinders are there?"] == "0"
    assert qa["how many green objects are there?"] == "1"
    # the camera faces the robot, so the robot's right (y < 0) is the image's left
    assert qa["is the red cube left or right of the blue ball?"] == "left"
    assert qa["is the blue ball left or right of the green cube?"] == "right"
    # the ball is nearer to the camera (larger x)
    assert qa["is the blue ball in front of or behind the red cube?"] == "in front"
    assert qa["is the green cube in front of or behind the blue ball?"] == "behind"
    # centred object: the green cube at y = 0 projects onto the vertical centre line
    u, v = (float(t) for t in qa["where is the green cube?"].split())
    assert u == pytest.approx(0.5, abs=0.005) and 0.0 < v < 1.0
    exists = {q.split(" ", 3)[3][:-1]: a for q, a in qa.items() if q.startswith("is there")}
    assert sorted(exists.values()) == ["no", "yes"]
    for description, answer in exists.items():
        assert (description in {o["description"] for o in KNOWN["objects"]}) == (answer == "yes")


def test_generator_is_deterministic_and_seed_dependent():
    a = vqa_pairs(KNOWN, np.random.default_rng(3))
    b = vqa_pairs(KNOWN, np.random.default_rng(3))
    c = vqa_pairs(KNOWN, np.random.default_rng(4))
    assert a == b and a != c
    fixed = sorted(p["question"] for p in a if p["kind"] != "exists")  # only 'is there' samples objects
    assert fixed == sorted(p["question"] for p in c if p["kind"] != "exists")
    assert len(vqa_pairs(KNOWN, np.random.default_rng(3), max_pairs=5)) == 5
    env = TabletopEnv("PickByDescription", image_size=64)
    first, again = episode_vqa(env, 21), episode_vqa(env, 21)
    assert first["pairs"] == again["pairs"] and first["split"] == "train"
    assert {p["kind"] for p in first["pairs"]} >= {"count", "exists", "where", "left_right"}


def test_heldout_split_by_seed():
    assert split_of(30) == "heldout" and split_of(31) == "train"
    splits = [split_of(s) for s in range(1000)]
    assert splits.count("heldout") == 100


def test_projection_matches_rendered_pixels():
    env = TabletopEnv("PickByDescription", image_size=128)
    env.reset(seed=11)
    info = env.scene_info()
    np.testing.assert_allclose(info["camera"]["xmat"], CAMERA["xmat"], atol=1e-6)
    renderer = mujoco.Renderer(env.model, 128, 128)
    renderer.enable_segmentation_rendering()
    renderer.update_scene(env.data, "front")
    seg = renderer.render()
    renderer.close()
    for obj in info["objects"]:
        mask = (seg[..., 0] == env.slot(obj["name"]).geom_id) & (seg[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM))
        assert mask.sum() > 10, obj["name"]
        rows, cols = np.nonzero(mask)
        u, v = project(info["camera"], obj["position"])
        assert abs(u - (cols.mean() + 0.5) / 128) < 0.03, obj["name"]
        assert abs(v - (rows.mean() + 0.5) / 128) < 0.03, obj["name"]


def test_reset_can_keep_fewer_objects_for_grounding_scenes():
    """reset(options={"max_objects": 1}) leaves only the target on the table; the VQA truth follows."""
    import gymnasium as gym

    env = gym.make("uio_robot/Reach-v0").unwrapped
    try:
        env.reset(seed=4)
        full = env.scene_info()
        env.reset(seed=4, options={"max_objects": 1})
        one = env.scene_info()
        assert len(full["objects"]) == 3 and [o["name"] for o in one["objects"]] == [full["target"]]
        parked = [n for n in env.slots if n not in {o["name"] for o in one["objects"]}]
        assert all(env.object_pos(n)[2] < 0 for n in parked)  # off the table
        with pytest.raises(ValueError, match="max_objects"):
            env.reset(seed=4, options={"max_objects": -1})
    finally:
        env.close()


def test_suite_vocabulary_has_every_word_of_every_task_and_question():
    from uio_robot.envs.tasks import TASKS
    from uio_robot.envs.vocabulary import suite_vocabulary

    words = {w for text in suite_vocabulary() for w in text.split()}
    said = []
    for name in TASKS:
        env = TabletopEnv(name, images=())
        for seed in range(4):
            env.reset(seed=seed)
            said.append(env.episode.instruction)
            pairs = vqa_pairs(env.scene_info(), np.random.default_rng(seed))
            said += [p["question"] for p in pairs] + [p["answer"] for p in pairs if p["kind"] != "where"]
        env.close()
    said += [p["question"] for p in vqa_pairs(KNOWN, np.random.default_rng(0))]
    missing = {w for text in said for w in text.split()} - words
    assert not missing, f"words the suite uses but its vocabulary lacks: {sorted(missing)}"
    assert {"left", "right", "in front", "behind", "yes", "no", "3"} <= set(suite_vocabulary())
