"""Generated "where is <image_history_1> ?" questions: every object of fresh VIMA-style scenes, its own
prompt image, its true position through the primitive codec; and train-vima's data.where_scenes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uio_robot.agent import record_vima
from uio_robot.envs.vima import ACTION_HIGH, ACTION_LOW, VimaEnv
from uio_robot.policies import vima_train
from uio_robot.policies.types import ActionChunk
from uio_robot.policies.uio2.preprocess import preprocess_image
from uio_robot.policies.uio2.tokenizer import UIO2Tokenizer, train_tokenizer
from uio_robot.policies.vima_grounding import GeneratedWhereExamples, generate_where_questions, grounding_score
from uio_robot.policies.vima_prompts import primitive_codec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["model.image_size=32", "model.history_size=32", "model.emb_dim=64", "model.mlp_dim=128",
        "model.encoder_layers=1", "model.decoder_layers=1", "model.vit_dim=64", "model.vit_layers=2"]


@pytest.fixture(scope="module")
def questions():
    return generate_where_questions(8, 32, progress=False)  # two scenes of each of the 4 training tasks


def test_every_object_of_every_scene_is_asked_about_with_its_prompt_image(questions):
    scenes = {(q.task, q.seed) for q in questions}
    assert len(scenes) == 8 and {t for t, _ in scenes} == {"VisualManipulation", "Rearrange", "SameShape", "Push"}
    for task, seed in sorted(scenes):
        env = VimaEnv(task, image_size=32)
        obs, _ = env.reset(seed=seed)
        asked = [q for q in questions if (q.task, q.seed) == (task, seed)]
        assert sorted(q.object for q in asked) == sorted(env.episode.objects) and len(asked) >= 2
        for q in asked:
            np.testing.assert_array_equal(q.frame, obs["image"])
            np.testing.assert_allclose(q.xy, env.scene.object_pos(q.object)[:2], atol=1e-5)  # solver warm start
            np.testing.assert_array_equal(q.object_image,
                                          env.scene.studio_image(q.object, env.episode.objects[q.object], 32))
        for placeholder, what in env.episode.assets.items():  # the env's own prompt images are the same pictures
            if what[0] == "thing" and what[1] in env.episode.objects and what[2] == env.episode.objects[what[1]]:
                mine = next(q for q in asked if q.object == what[1])
                np.testing.assert_array_equal(mine.object_image, obs["prompt_assets"][placeholder])
        env.close()
    assert any(len({q.object_image.tobytes() for q in questions if (q.task, q.seed) == s}) > 1 for s in scenes)


def test_examples_target_the_objects_position_within_one_bin(questions, tmp_path):
    codec = primitive_codec(ACTION_LOW, ACTION_HIGH)
    tok = UIO2Tokenizer(train_tokenizer(["where is ? put the into the"] * 20, tmp_path / "t.model", 300))
    examples = GeneratedWhereExamples(questions, tok, codec, 32, 32, 2, 64)
    assert len(examples) == len(questions)
    half = codec.action.half_bin()[:2]
    for i in (0, len(questions) // 2, len(questions) - 1):
        q, ex = questions[i], examples[i]
        assert "where is <image_history_1> ?" in tok.decode(ex["inputs/text/tokens"].tolist())
        np.testing.assert_array_equal(ex["inputs/image_history/input"][0], preprocess_image(q.object_image, 32, "x")[0])
        assert ex["inputs/image_history/mask"][0].all() and not ex["inputs/image_history/mask"][1].any()
        np.testing.assert_array_equal(ex["inputs/image/input"], preprocess_image(q.frame, 32, "x")[0])
        bins = [tok.location_bin(t) for t in ex["targets/text/targets"].tolist() if t > 1]
        assert len(bins) == 2
        decoded = codec.decode_actions(np.array(bins + [0, 0, 0, 0]))[0][:2]
        assert np.all(np.abs(decoded - q.xy) <= half + 1e-6), (decoded, q.xy)


def test_bad_values_are_rejected():
    for bad in (0, -3, 100_001, 2.5):
        with pytest.raises(ValueError, match="n_scenes"):
            generate_where_questions(bad, 32)
    with pytest.raises(ValueError, match="camera"):
        generate_where_questions(1, 32, camera="side")
    with pytest.raises(ValueError, match="first_seed"):
        generate_where_questions(1, 32, first_seed=-1)
    with pytest.raises(vima_train.RecipeError, match="where_scenes"):
        vima_train.load_recipe(["data.where_scenes=-1"])
    with pytest.raises(vima_train.RecipeError, match="where_scenes"):
        vima_train.load_recipe(["data.where_scenes=200000", "data.where_fraction=0.5"])
    with pytest.raises(vima_train.RecipeError, match="where_fraction"):
        vima_train.load_recipe(["data.where_scenes=10"])
    assert vima_train.load_recipe([]).data.where_scenes == 0


def test_train_vima_takes_where_questions_from_generated_scenes(tmp_path):
    demos = tmp_path / "demos"  # Rearrange demos only: no demo could supply a where question
    assert record_vima.main(["--out", str(demos), "--tasks", "Rearrange", "--episodes", "2", "--image-size", "32"]) == 0
    out = tmp_path / "run"
    rc = vima_train.main([f"data.dir={demos}", f"out_dir={out}", "train.steps=2", "train.batch_size=4",
                          "train.log_every=1", "data.val_episodes=1", "data.where_fraction=0.5",
                          "data.where_scenes=4", *TINY])
    assert rc == 0
    rows = [r.split(",") for r in (out / "loss.csv").read_text().splitlines()]
    assert rows[0][-1] == "val_where_bin_err" and len(rows) == 3
    assert all(np.isfinite(float(r[-1])) for r in rows[1:])  # held-out generated questions were scored
    meta = json.loads((out / "checkpoint" / "uio_robot.json").read_text())
    assert meta["train"]["where_examples"] >= 8  # 4 scenes, two or more objects each


class _Answers:
    """A policy that answers every where question with a position chosen from the question's scene."""

    def __init__(self, questions, choose):
        self.answers = {q.object_image.tobytes() + q.frame.tobytes(): choose(q) for q in questions}

    def act(self, obs):
        key = obs.instruction[1].tobytes() + obs.images["image"].tobytes()
        return ActionChunk(np.r_[self.answers[key], 0.0, 0.0, 0.0, 0.0], 0.0, 1.0)


def test_grounding_score_counts_answers_nearest_the_asked_object(questions):
    right = grounding_score(_Answers(questions, lambda q: q.xy + 0.005), questions)
    assert right["hit"] == 1.0 and right["near"] == 1.0 and 0.4 < right["median_cm"] < 0.8
    assert right["questions"] == len(questions)
    assert right["chance"] == pytest.approx(np.mean([1 / len(q.scene_xy) for q in questions]))
    other = grounding_score(_Answers(questions, lambda q: next(xy for n, xy in q.scene_xy.items() if n != q.object)),
                            questions)
    assert other["hit"] == 0.0 and other["median_cm"] > 3
    with pytest.raises(ValueError, match="no questions"):
        grounding_score(None, [])
