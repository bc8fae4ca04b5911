"""Training: a short run lowers the loss, an interrupted run resumes to the same weights, the checkpoint
carries the data's statistics and loads as a policy, and bad recipes are clear errors."""

import csv

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from uio_robot.agent import record_demos
from uio_robot.policies import train as train_mod
from uio_robot.policies.codec import Codec
from uio_robot.policies.dataset import compute_codec, load_demos
from uio_robot.policies.recipe import RecipeError, load_recipe
from uio_robot.policies.uio2.checkpoint import read_metadata

TINY = ["model.emb_dim=64", "model.mlp_dim=128", "model.vit_dim=64", "model.vit_layers=2",
        "model.encoder_layers=1", "model.decoder_layers=1", "model.image_size=32", "model.history_size=32",
        "model.tokenizer_pieces=300", "train.batch_size=8", "train.lr=3e-3", "train.warmup=5",
        "train.threads=1", "data.val_episodes=1"]


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "demos"
    assert record_demos.main(["--out", str(out), "--tasks", "Reach", "--episodes", "6", "--vqa-scenes", "2",
                              "--vqa-tasks", "Reach,Stack", "--image-size", "64"]) == 0
    return out


def _recipe(demos, out_dir, *extra):
    return load_recipe([f"data.dir={demos}", f"out_dir={out_dir}", *TINY, *extra])


def _rows(out_dir):
    with open(out_dir / "loss.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_short_run_lowers_the_loss(demos, tmp_path):
    out = tmp_path / "run"
    checkpoint = train_mod.train(_recipe(demos, out, "train.location_sigma=0", "train.steps=80", "train.log_every=10",
                                         "train.eval_every=40", "train.save_every=40"))
    rows = _rows(out)
    assert [int(r["step"]) for r in rows] == list(range(10, 90, 10))
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    assert last < 0.7 * first, (first, last)
    assert float(rows[-1]["val_action_loss"]) < 0.8 * first  # on the held-out episode too
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "tokenizer.model").is_file()


def test_interrupted_run_resumes_to_the_same_weights(demos, tmp_path, monkeypatch):
    straight = train_mod.train(_recipe(demos, tmp_path / "a", "train.steps=12", "train.save_every=6"))

    real_save = train_mod.save_state

    def save_then_crash(path, model, optimizer, step, epoch, position):
        real_save(path, model, optimizer, step, epoch, position)
        raise KeyboardInterrupt  # the process dies right after the first periodic save

    monkeypatch.setattr(train_mod, "save_state", save_then_crash)
    recipe = _recipe(demos, tmp_path / "b", "train.steps=12", "train.save_every=6", "train.log_every=3")
    with pytest.raises(KeyboardInterrupt):
        train_mod.train(recipe)
    monkeypatch.undo()
    assert torch.load(tmp_path / "b" / "train_state.pt", weights_only=False)["step"] == 6
    resumed = train_mod.train(recipe)
    assert torch.load(tmp_path / "b" / "train_state.pt", weights_only=False)["step"] == 12
    assert [int(r["step"]) for r in _rows(tmp_path / "b")] == [3, 6, 9, 12]
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_checkpoint_carries_the_data_statistics_and_acts(demos, tmp_path):
    checkpoint = train_mod.train(_recipe(demos, tmp_path / "c", "train.steps=2", "data.chunk=3",
                                         "data.state_dims=[0,1,2]"))
    meta = read_metadata(checkpoint)
    codec = Codec.from_dict(meta["codec"])  # the hash inside must match the statistics
    data = load_demos(demos)
    reference = compute_codec(data, chunk=3)
    assert codec.action.names == reference.action.names and codec.state.names == reference.state.names
    assert codec.action.normalize[-1] is False  # the binary gripper stays in [-1, 1]
    actions = np.concatenate([e.action for e in data.episodes])
    assert np.all(np.array(codec.action.q01) >= actions.min(0) - 1e-9)
    assert np.all(np.array(codec.action.q99) <= actions.max(0) + 1e-9)
    assert meta["action_format"]["chunk"] == 3 and meta["action_format"]["state_dims"] == [0, 1, 2]
    assert meta["train"]["recipe"]["train"]["steps"] == 2

    from uio_robot.policies.types import Observation
    from uio_robot.policies.uio2_policy import UIO2Policy

    policy = UIO2Policy(checkpoint, device="cpu")
    ep = data.episodes[0]
    chunk = policy.act(Observation({"image": ep.images["image"][0]}, ep.state[0], ep.instruction, 0.0))
    assert chunk.actions.shape == (3, 5) and np.all(np.isfinite(chunk.actions))


def test_bad_recipes_are_named(demos, tmp_path):
    with pytest.raises(RecipeError, match="stepz"):
        load_recipe(["train.stepz=3"])
    with pytest.raises(RecipeError, match="data.chunk"):
        load_recipe(["data.chunk=0"])
    with pytest.raises(RecipeError, match="key=value"):
        load_recipe(["train.steps"])
    with pytest.raises(RecipeError, match="data.vqa_kinds"):
        load_recipe(["data.vqa_kinds=[wher]"])
    assert train_mod.main([f"data.dir={tmp_path / 'none'}", f"out_dir={tmp_path / 'o'}"]) == 2


def test_soft_location_targets_charge_near_misses_less(demos, tmp_path):
    from uio_robot.policies.uio2.tokenizer import UIO2Tokenizer, train_tokenizer

    tok = UIO2Tokenizer(train_tokenizer(["robot state", "reach the red cube"], tmp_path / "t.model", 300))
    vocab = tok.vocab_size
    target = tok.location_token(500)
    batch = {"targets/text/targets": torch.tensor([[target, tok.eos_id]] * 3),
             "targets/text/mask": torch.ones(3, 2, dtype=torch.int32)}
    logits = torch.zeros(3, 2, vocab)
    for row, guess in enumerate((500, 505, 700)):  # exact, near miss, far miss
        logits[row, 0, tok.location_token(guess)] = 10.0
    logits[:, 1, tok.eos_id] = 10.0
    soft = train_mod.TokenLoss(tok, vocab, sigma=5.0, device=torch.device("cpu"))(lambda b: logits, batch)
    hard = train_mod.TokenLoss(tok, vocab, sigma=0.0, device=torch.device("cpu"))(lambda b: logits, batch)
    assert soft["loss"][1] < soft["loss"][2]  # soft: the near miss is cheaper than the far one
    assert torch.isclose(hard["loss"][1], hard["loss"][2])  # one-hot: every miss costs the same
    assert soft["bin_err"].tolist() == [0.0, 5.0, 200.0]
    assert soft["correct"].tolist() == [True, False, False]


def test_two_process_ddp_run_on_cpu(demos, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "uio_robot.policies.train", f"data.dir={demos}", f"out_dir={out}", *TINY,
           "train.steps=4", "train.log_every=2", "train.eval_every=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    assert [int(r["step"]) for r in _rows(out)] == [2, 4]
    assert read_metadata(out / "checkpoint")["train"]["step"] == 4


def test_location_tokens_start_with_smooth_embeddings(tmp_path):
    """From scratch, neighbouring location bins start close and far bins apart (ordered, not random)."""
    import torch

    from uio_robot.policies.recipe import ModelRecipe, model_config
    from uio_robot.policies.uio2.tokenizer import UIO2Tokenizer, train_tokenizer

    path = tmp_path / "tok.model"
    train_tokenizer(["reach the red cube", "where is the ball?"] * 20, path, vocab_size=300)
    tok = UIO2Tokenizer(path)
    model = train_mod.scratch_model(model_config(ModelRecipe(), tok.model_vocab_size, 0), tok, seed=0)
    rows = model.text_token_embedder.weight[[tok.location_token(b) for b in (500, 501, 900)]]
    cos = torch.nn.functional.cosine_similarity
    assert cos(rows[0], rows[1], dim=0) > 0.9 > 0.5 > cos(rows[0], rows[2], dim=0)
    word = model.text_token_embedder.weight[tok.encode("red")[0]]
    assert abs(float(rows[0].norm() / word.norm()) - 1) < 0.3  # same scale as the other tokens


def test_data_loader_workers_give_the_same_run(demos, tmp_path):
    inline = train_mod.train(_recipe(demos, tmp_path / "w0", "train.steps=6", "train.save_every=6"))
    workers = train_mod.train(_recipe(demos, tmp_path / "w2", "train.steps=6", "train.save_every=6",
                                      "train.workers=2"))
    a, b = load_file(inline / "model.safetensors"), load_file(workers / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_max_minutes_stops_and_saves_with_validation(demos, tmp_path):
    out = tmp_path / "timed"
    train_mod.train(_recipe(demos, out, "train.steps=100000", "train.log_every=2", "train.max_minutes=1e-6"))
    state = torch.load(out / "train_state.pt", weights_only=False)
    assert state["step"] == 2  # the first logged step after the (tiny) budget
    rows = _rows(out)
    assert rows[-1]["step"] == "2" and rows[-1]["val_action_loss"] not in ("", None)
    assert read_metadata(out / "checkpoint")["train"]["step"] == 2


def test_stop_where_bins_stops_at_the_first_validation_that_grounds(demos, tmp_path):
    out = tmp_path / "grounded"  # every where error is within 999 bins: the first validation stops it
    train_mod.train(_recipe(demos, out, "train.steps=40", "train.log_every=2", "train.eval_every=4",
                            "train.stop_where_bins=999"))
    rows = _rows(out)
    assert rows[-1]["step"] == "4" and 0 <= float(rows[-1]["val_vqa_bin_err"]) <= 999
    assert torch.load(out / "train_state.pt", weights_only=False)["step"] == 4
    out = tmp_path / "not_grounded"  # a threshold no tiny run reaches: it trains to the end
    train_mod.train(_recipe(demos, out, "train.steps=8", "train.log_every=2", "train.eval_every=4",
                            "train.stop_where_bins=1e-9"))
    assert _rows(out)[-1]["step"] == "8"
    with pytest.raises(RecipeError, match="train.stop_where_bins"):
        load_recipe(["train.stop_where_bins=-1"])


def test_fine_tuning_at_a_larger_image_size(demos, tmp_path):
    first = train_mod.train(_recipe(demos, tmp_path / "a", "train.steps=2", "data.chunk=3"))
    with pytest.raises(RecipeError, match="model.init_image_size"):
        load_recipe(["model.init_image_size=64"])  # needs model.init
    with pytest.raises(RecipeError, match="model.init_image_size"):
        load_recipe([f"model.init={first}", "model.init_image_size=40"])
    bigger = train_mod.train(_recipe(demos, tmp_path / "b", "train.steps=2", "data.chunk=3", f"model.init={first}",
                                     "model.init_image_size=64"))
    from uio_robot.policies.types import Observation
    from uio_robot.policies.uio2.checkpoint import load_model
    from uio_robot.policies.uio2_policy import UIO2Policy

    assert load_model(bigger, device="cpu").config.t5_config.default_image_vit_size == [64, 64]
    policy = UIO2Policy(bigger, device="cpu")
    assert policy.image_size == 64
    ep = load_demos(demos).episodes[0]
    chunk = policy.act(Observation({"image": ep.images["image"][0]}, ep.state[0], ep.instruction, 0.0))
    assert chunk.actions.shape == (3, 5) and np.all(np.isfinite(chunk.actions))


def test_kind_repeat_is_checked():
    assert load_recipe(["data.kind_repeat.shape=3"]).data.kind_repeat == {"where": 3, "shape": 3}
    with pytest.raises(RecipeError, match="data.kind_repeat"):
        load_recipe(["data.kind_repeat.shap=3"])
    with pytest.raises(RecipeError, match="data.kind_repeat"):
        load_recipe(["data.kind_repeat.where=0"])


def test_bf16_autocast_trains_and_differs_from_fp32(demos, tmp_path):
    with pytest.raises(RecipeError, match="train.precision"):
        load_recipe(["train.precision=fp16"])
    steps = ["train.location_sigma=0", "train.steps=60", "train.log_every=10", "train.eval_every=60"]
    half = train_mod.train(_recipe(demos, tmp_path / "bf16", *steps, "train.precision=bf16"))
    rows = _rows(tmp_path / "bf16")
    assert float(rows[-1]["loss"]) < 0.7 * float(rows[0]["loss"])
    assert all(v.dtype == torch.float32 for v in load_file(half / "model.safetensors").values())  # weights stay fp32
    short = [*steps, "train.steps=3"]  # the same 3 steps in each precision: autocast must change the result
    a = load_file(train_mod.train(_recipe(demos, tmp_path / "a", *short, "train.precision=bf16")) / "model.safetensors")
    b = load_file(train_mod.train(_recipe(demos, tmp_path / "b", *short)) / "model.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_more_dirs_are_read_with_the_first_and_must_match_it(demos, tmp_path):
    import json
    import shutil

    from uio_robot.policies.dataset import DatasetError, load_recordings

    more = tmp_path / "more"
    assert record_demos.main(["--out", str(more), "--tasks", "Reach", "--episodes", "3", "--seed", "40",
                              "--image-size", "32"]) == 0
    both = load_recordings([demos, more])
    assert len(both.episodes) == len(load_demos(demos).episodes) + len(load_demos(more).episodes)
    assert {e.seed for e in load_demos(more).episodes} <= {e.seed for e in both.episodes}
    checkpoint = train_mod.train(_recipe(demos, tmp_path / "run", "train.steps=1", f"data.more_dirs=[{more}]"))
    assert read_metadata(checkpoint)["train"]["train_episodes"] == len(both.episodes) - 1  # one held out
    other = tmp_path / "other"
    shutil.copytree(more, other)
    index = json.loads((other / "index.json").read_text())
    index["control_period_s"] = 0.1
    (other / "index.json").write_text(json.dumps(index))
    with pytest.raises(DatasetError, match="control_period_s"):
        load_recordings([demos, other])


def test_a_batch_split_by_kind_gives_the_same_loss_and_gradients(demos, tmp_path):
    from uio_robot.policies.dataset import ActionExamples, MixedExamples, VQAExamples
    from uio_robot.policies.uio2.model import to_batch
    from uio_robot.policies.uio2.preprocess import build_batch
    from uio_robot.policies.uio2.tokenizer import UIO2Tokenizer

    r = _recipe(demos, tmp_path, "data.vqa_fraction=0.9")
    data = load_demos(demos)
    tokenizer = UIO2Tokenizer(train_mod.build_tokenizer(r, data, tmp_path, train_mod.Dist()))
    model = train_mod.build_model(r, tokenizer, torch.device("cpu"))
    fmt = train_mod.example_format(r, compute_codec(data, r.data.chunk, "quantile"), model)
    mixed = MixedExamples(ActionExamples(data.episodes, tokenizer, fmt), VQAExamples(data.scenes, tokenizer, fmt), 0.9)
    every = [mixed[i] for i in range(len(mixed))]
    examples = ([ex for ex in every if ex["meta/is_action"][0]][:2]
                + [ex for ex in every if not ex["meta/is_action"][0]][:14])
    assert {int(ex["meta/is_action"][0]) for ex in examples} == {0, 1}
    parts = train_mod.collate_by_kind(examples)  # 4 image tokens and short answers: worth splitting
    assert len(parts) == 2 and len(parts[1]["targets/text/targets"][0]) < len(parts[0]["targets/text/targets"][0])
    loss_fn = train_mod.TokenLoss(tokenizer, model.config.t5_config.vocab_size, 15.0, torch.device("cpu"))

    def loss_and_grads(batches):
        model.zero_grad()
        losses = [loss_fn(model, to_batch(b))["loss"] for b in batches]
        total = torch.cat(losses).sum() / len(examples)
        total.backward()
        return total.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    whole, whole_grads = loss_and_grads([build_batch(examples)])
    split, split_grads = loss_and_grads(parts)
    assert torch.allclose(whole, split, atol=1e-5)
    assert len(whole_grads) == len(split_grads)
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-3) for a, b in zip(whole_grads, split_grads))
    actions_only = [ex for ex in examples if int(ex["meta/is_action"][0])]
    assert len(train_mod.collate_by_kind(actions_only)) == 1
