"""train-vima model.init: a run that starts from the shipped default model's weights and tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from uio_robot.agent import record_vima
from uio_robot.envs.vima import VimaEnv, observation_prompt
from uio_robot.policies import vima_train
from uio_robot.policies.factory import default_checkpoint_dir
from uio_robot.policies.types import Observation
from uio_robot.policies.uio2.checkpoint import load_model
from uio_robot.policies.uio2_primitive_policy import UIO2PrimitivePolicy
from uio_robot.policies.vima_data import load_episodes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("vima_init") / "demos"
    args = ["--out", str(out), "--tasks", "VisualManipulation", "--episodes", "5", "--image-size", "64",
            "--camera", "image"]
    assert record_vima.main(args) == 0
    return out


def test_init_loads_the_checkpoints_weights_and_tokenizer(demos, tmp_path):
    default = default_checkpoint_dir()
    _, episodes = load_episodes(demos)
    recipe = vima_train.load_recipe([f"model.init={default}", "data.prompt_images=2"])
    tok_path, tokenizer, model = vima_train.initial_model(recipe, episodes, tmp_path)
    assert tok_path.read_bytes() == (default / "tokenizer.model").read_bytes()
    assert model.config.num_frames == 2  # the VIMA prompt's images; the checkpoint itself had 1
    reference = load_model(default, dtype=torch.float32, device="cpu").state_dict()
    mine = model.state_dict()
    assert mine.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(mine[name], tensor), name
    ids = tokenizer.encode("put the dax into the wug")  # new words still encode (byte fallback)
    assert ids and max(ids) < model.config.t5_config.vocab_size
    # and the weights are not those a run from scratch builds
    _, _, scratch = vima_train.initial_model(vima_train.load_recipe(["model.image_size=64"]), episodes,
                                             tmp_path / "scratch")
    key = "input_embedders.image.image_encoder.vision_transformer.embedding.weight"
    assert not torch.equal(scratch.state_dict()[key], reference[key])

def test_train_vima_from_the_default_model_acts(demos, tmp_path):
    default = default_checkpoint_dir()
    out = tmp_path / "run"
    rc = vima_train.main([f"data.dir={demos}", f"out_dir={out}", f"model.init={default}", "train.steps=2",
                          "train.batch_size=2", "train.log_every=1", "data.val_episodes=1", "train.lr=1e-5"])
    assert rc == 0
    ckpt = out / "checkpoint"
    assert (ckpt / "tokenizer.model").read_bytes() == (default / "tokenizer.model").read_bytes()
    config = json.loads((ckpt / "config.json").read_text())
    base = json.loads((default / "config.json").read_text())
    assert config["sequence_length"]["num_frames"] == 2
    for key in ("t5_config", "image_vit_cfg", "image_history_cfg"):  # the checkpoint's network, unchanged
        assert config[key] == base[key], key
    rows = [r.split(",") for r in (out / "loss.csv").read_text().splitlines()[1:]]
    best = json.loads((out / "checkpoint_best" / "uio_robot.json").read_text())
    val = [float(r[2]) for r in rows]
    assert best["step"] == int(rows[int(np.argmin(val))][0]) and best["val_loss"] == pytest.approx(min(val), abs=1e-4)
    policy = UIO2PrimitivePolicy(ckpt, device="cpu", dtype="float32")
    env = VimaEnv("VisualManipulation", image_size=64)
    raw, _ = env.reset(seed=100000)
    chunk = policy.act(Observation({"image": raw["image"]}, np.zeros(0, np.float32), observation_prompt(raw)))
    assert chunk.actions.shape == (1, 6) and np.all(np.isfinite(chunk.actions))
    env.close()


def test_train_vima_init_bad_input(demos, tmp_path, capsys):
    args = [f"data.dir={demos}", f"out_dir={tmp_path / 'o'}"]
    assert vima_train.main([*args, f"model.init={tmp_path / 'none'}"]) == 2
    assert "has no tokenizer.model" in capsys.readouterr().err
    default, broken = default_checkpoint_dir(), tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.model"):
        (broken / name).write_bytes((default / name).read_bytes())
    (broken / "model.safetensors").write_bytes((default / "model.safetensors").read_bytes()[:5000])
    assert vima_train.main([*args, f"model.init={broken}"]) == 2
    assert "truncated" in capsys.readouterr().err
    recipe = vima_train.load_recipe([f"model.init={default}", "data.prompt_images=5"])
    with pytest.raises(vima_train.RecipeError, match="prompt_images 5 > .* 4 history frames"):
        vima_train.initial_model(recipe, [], tmp_path)
