"""VIMA-style demonstrations (record-vima), their UIO2 examples, and a few steps of train-vima whose
checkpoint acts as a UIO2PrimitivePolicy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uio_robot.agent import record_vima
from uio_robot.envs.vima import VimaEnv, observation_prompt
from uio_robot.policies import vima_train
from uio_robot.policies.codec import NUM_BINS
from uio_robot.policies.types import Observation
from uio_robot.policies.uio2.preprocess import preprocess_image
from uio_robot.policies.uio2.tokenizer import UIO2Tokenizer, train_tokenizer
from uio_robot.policies.uio2_primitive_policy import UIO2PrimitivePolicy
from uio_robot.policies.vima_data import PrimitiveExamples, WhereExamples, join_parts, load_episodes, split_parts
from uio_robot.policies.vima_prompts import primitive_codec

TINY = ["model.image_size=32", "model.history_size=32", "model.emb_dim=64", "model.mlp_dim=128",
        "model.encoder_layers=1", "model.decoder_layers=1", "model.vit_dim=64", "model.vit_layers=2"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("vima") / "demos"
    args = ["--out", str(out), "--tasks", "VisualManipulation,Rearrange", "--episodes", "3", "--image-size", "32"]
    assert record_vima.main(args) == 0
    assert record_vima.main(args) == 0  # resumes: nothing recorded twice
    return out


def test_recorded_demos_and_their_examples(demos, tmp_path):
    index = json.loads((demos / "index.json").read_text())
    assert len(index["episodes"]) == 6 and all(e["success"] for e in index["episodes"])
    _, episodes = load_episodes(demos)
    vm = next(e for e in episodes if e.task == "VisualManipulation")
    assert [p for p in vm.parts if isinstance(p, str)] == ["put the", "into the", "."]
    env = VimaEnv("VisualManipulation", image_size=32)
    obs, _ = env.reset(seed=vm.seed)
    for mine, theirs in zip(vm.parts, observation_prompt(obs)):  # the recorded prompt is the env's
        np.testing.assert_array_equal(mine, theirs)
    env.close()
    codec = primitive_codec(index["action_low"], index["action_high"])
    tok = UIO2Tokenizer(train_tokenizer(["put the into the rearrange to this"] * 20, tmp_path / "t.model", 300))
    examples = PrimitiveExamples(episodes, tok, codec, 32, 32, 2, 64)
    assert len(examples) == sum(len(e.action) for e in episodes)
    ex = examples[0]
    targets = [t for t in ex["targets/text/targets"].tolist() if t > 1]
    bins = np.array([tok.location_bin(t) for t in targets])
    assert len(bins) == 6 and bins.max() < NUM_BINS
    decoded = codec.decode_actions(bins)[0]
    assert np.all(np.abs(decoded - episodes[0].action[0]) <= codec.action.half_bin() + 1e-5)


def test_where_examples_ask_for_the_picked_objects_recorded_position(demos, tmp_path):
    index, episodes = load_episodes(demos)
    codec = primitive_codec(index["action_low"], index["action_high"])
    tok = UIO2Tokenizer(train_tokenizer(["put the into the rearrange to this where is ?"] * 20, tmp_path / "t.model",
                                        300))
    where = WhereExamples(episodes, tok, codec, 32, 32, 2, 64)
    picked = [e for e in episodes if e.task == "VisualManipulation"]  # Rearrange's prompt image is a scene
    assert len(where) == len(picked) == 3
    for i, ep in enumerate(picked):
        ex = where[i]
        assert "where is <image_history_1> ?" in tok.decode(ex["inputs/text/tokens"].tolist())
        prompt_object = next(p for p in ep.parts if not isinstance(p, str))  # the {dragged_obj} image
        np.testing.assert_array_equal(ex["inputs/image_history/input"][0], preprocess_image(prompt_object, 32, "x")[0])
        assert ex["inputs/image_history/mask"][0].all() and not ex["inputs/image_history/mask"][1].any()
        np.testing.assert_array_equal(ex["inputs/image/input"], preprocess_image(ep.observation[0], 32, "x")[0])
        targets = [t for t in ex["targets/text/targets"].tolist() if t > 1]
        bins = [tok.location_bin(t) for t in targets]
        recorded = codec.encode_actions(ep.action[:1])  # the oracle's pick x, y bins, as the primitive target's
        assert bins == recorded[:2].tolist()


def test_train_vima_with_where_questions(demos, tmp_path):
    out = tmp_path / "run"
    rc = vima_train.main([f"data.dir={demos}", f"out_dir={out}", "train.steps=2", "train.batch_size=4",
                          "train.log_every=1", "data.val_episodes=2", "data.where_fraction=0.5", *TINY])
    assert rc == 0
    rows = [r.split(",") for r in (out / "loss.csv").read_text().splitlines()]
    assert rows[0][-1] == "val_where_bin_err" and len(rows) == 3
    assert all(np.isfinite(float(r[1])) for r in rows[1:])  # the one held-out episode here is a Rearrange one
    meta = json.loads((out / "checkpoint" / "uio_robot.json").read_text())
    assert meta["train"]["where_examples"] > 0


def test_split_and_join_parts_round_trip():
    a, b = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)
    parts = ["this is a", a, ".", b, "now"]
    texts, images = split_parts(parts)
    assert texts == ["this is a", ".", "now"] and len(images) == 2
    back = join_parts(texts, images)
    assert back[0] == "this is a" and back[1] is images[0] and back[2:] == [".", images[1], "now"]


def test_train_vima_checkpoint_acts(demos, tmp_path):
    out = tmp_path / "run"
    rc = vima_train.main([f"data.dir={demos}", f"out_dir={out}", "train.steps=3", "train.batch_size=2",
                          "train.log_every=1", "data.val_episodes=1", *TINY])
    assert rc == 0
    rows = (out / "loss.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and len(rows) == 4 and all(np.isfinite(float(r.split(",")[1]))
                                                                       for r in rows[1:])
    policy = UIO2PrimitivePolicy(out / "checkpoint", device="cpu", dtype="float32")
    env = VimaEnv("Rearrange", image_size=32)
    raw, _ = env.reset(seed=100000)
    chunk = policy.act(Observation({"top_image": raw["top_image"]}, np.zeros(0, np.float32), observation_prompt(raw)))
    assert chunk.actions.shape == (1, 6)
    env.step(chunk.actions[0])
    env.close()


def test_train_vima_bad_input(tmp_path, capsys):
    assert vima_train.main([f"data.dir={tmp_path}", f"out_dir={tmp_path / 'o'}"]) == 2
    assert "index.json" in capsys.readouterr().err
    assert vima_train.main(["train.stepz=3"]) == 2
    for bad, field in (("train.lr=0", "train.lr"), ("train.steps=0", "train.steps"), ("data.prompt_images=0",
                                                                                      "data.prompt_images"),
                       ("data.where_fraction=1", "data.where_fraction"),
                       ("data.where_fraction=-0.1", "data.where_fraction")):
        with pytest.raises(vima_train.RecipeError, match=field):
            vima_train.load_recipe([bad])
    recipe = vima_train.load_recipe([])  # the VIMA defaults on the main trainer's OptimRecipe
    assert isinstance(recipe.train, vima_train.OptimRecipe) and recipe.train.steps == 1500
