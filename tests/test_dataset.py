"""Demonstration dataset: the recorded schema, round trips, atomic writes, statistics and examples."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import sentencepiece as spm

from uio_robot.agent import record_demos
from uio_robot.policies import dataset as ds
from uio_robot.policies.dataset import (
    ActionExamples,
    DatasetError,
    DemoWriter,
    ExampleFormat,
    MixedExamples,
    VQAExamples,
    compute_codec,
    load_demos,
    read_index,
)
from uio_robot.policies.prompts import ActionFormat
from uio_robot.policies.uio2.tokenizer import UIO2Tokenizer, train_tokenizer

NAMES_A = ["dx", "dy", "gripper"]
NAMES_S = ["x", "y", "z", "opening"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "demos"
    assert record_demos.main(["--out", str(out), "--tasks", "Reach", "--episodes", "3",
                              "--vqa-scenes", "1", "--vqa-tasks", "Push,Reach", "--image-size", "64"]) == 0
    return out


def _episode(rng, steps=6):
    return dict(frames={"image": rng.integers(0, 255, (steps, 16, 16, 3), dtype=np.uint8)},
                state=rng.normal(size=(steps, 4)).astype(np.float32),
                action=np.concatenate([rng.normal(size=(steps, 2)), rng.choice([-1.0, 1.0], (steps, 1))],
                                      1).astype(np.float32))


def _writer(root, flush_s=2.0):
    return DemoWriter(root, NAMES_A, NAMES_S, 0.05, 16, ["image"], flush_s=flush_s)


def test_record_writes_the_documented_schema(recorded):
    index = json.loads((recorded / "index.json").read_text())
    assert index["format"] == "uio_robot.demos" and index["version"] == 1
    assert index["action_names"] == ["dx", "dy", "dz", "dyaw", "gripper"]
    assert len(index["state_names"]) == 12 and index["cameras"] == ["image"] and index["image_size"] == 64
    assert [e["seed"] for e in index["episodes"]] == [0, 1, 2]
    # scenes of a demo task take the seeds after its episodes; other tasks start at the first seed
    assert sorted((e["task"], e["seed"]) for e in index["scenes"]) == [("Push", 0), ("Reach", 3)]
    entry = index["episodes"][0]
    assert set(entry) == {"file", "task", "seed", "steps", "success", "instruction", "vqa_pairs"}
    with np.load(recorded / entry["file"], allow_pickle=False) as f:
        steps = entry["steps"]
        assert f["image"].shape == (steps, 64, 64, 3) and f["image"].dtype == np.uint8
        assert f["state"].shape == (steps, 12) and f["state"].dtype == np.float32
        assert f["action"].shape == (steps, 5) and f["action"].dtype == np.float32
        assert str(f["instruction"]) == entry["instruction"] and int(f["seed"]) == 0
        assert bool(f["success"]) == entry["success"]
        assert len(f["vqa_question"]) == len(f["vqa_answer"]) == len(f["vqa_kind"]) == entry["vqa_pairs"] > 0
    with np.load(recorded / index["scenes"][0]["file"], allow_pickle=False) as f:
        assert f["image"].shape == (64, 64, 3)
    assert all(e["success"] for e in index["episodes"])  # the Reach expert succeeds on these seeds


def test_record_resumes_without_duplicates(recorded, tmp_path):
    before = (recorded / "index.json").read_text()
    assert record_demos.main(["--out", str(recorded), "--tasks", "Reach", "--episodes", "3",
                              "--vqa-scenes", "1", "--vqa-tasks", "Push,Reach", "--image-size", "64"]) == 0
    assert (recorded / "index.json").read_text() == before


def test_record_refuses_evaluation_seeds(tmp_path):
    with pytest.raises(SystemExit):
        record_demos.main(["--out", str(tmp_path), "--episodes", "5", "--seed", "99998"])


def test_record_with_action_noise_labels_each_noisy_state_with_the_experts_correction(recorded, tmp_path):
    from uio_robot.envs import TabletopEnv
    from uio_robot.envs.experts import CRUISE
    from uio_robot.envs.tasks import Reach

    with np.load(recorded / read_index(recorded)["episodes"][0]["file"]) as f:
        assert "executed_action" not in f.files  # clean demos execute what they record
    out = tmp_path / "noisy"
    assert record_demos.main(["--out", str(out), "--tasks", "Reach", "--episodes", "2", "--image-size", "32",
                              "--action-noise", "0.01"]) == 0
    env = TabletopEnv("Reach", image_size=32)
    try:
        for entry in read_index(out)["episodes"]:
            with np.load(out / entry["file"]) as f:
                state, action, executed = f["state"], f["action"], f["executed_action"]
            noise = executed[:, :3] - action[:, :3]
            assert 0.005 < noise.std() < 0.02 and np.array_equal(executed[:, 3:], action[:, 3:])
            env.reset(seed=entry["seed"])
            err = Reach.goal(env) - state[:, :3]  # the label is the expert's step from the state it saw
            dist = np.linalg.norm(err, axis=1, keepdims=True)
            np.testing.assert_allclose(action[:, :3], err * np.minimum(1.0, CRUISE / dist), atol=1e-5)
    finally:
        env.close()
    with pytest.raises(SystemExit):
        record_demos.main(["--out", str(tmp_path / "bad"), "--episodes", "1", "--action-noise", "-0.01"])


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    ep = _episode(rng)
    pairs = [{"question": "how many objects are on the table?", "answer": "3", "kind": "count"}]
    with _writer(tmp_path) as w:
        w.add_episode("Reach", 7, "reach the red cube", ep["frames"], ep["state"], ep["action"], True, pairs)
        w.add_episode("Reach", 8, "reach the blue ball", ep["frames"], ep["state"], ep["action"], False, [])
    data = load_demos(tmp_path)
    assert len(data.episodes) == 1  # the failed episode is recorded but not trained on
    got = data.episodes[0]
    assert got.seed == 7 and got.instruction == "reach the red cube" and got.vqa == pairs
    np.testing.assert_array_equal(got.images["image"], ep["frames"]["image"])
    np.testing.assert_array_equal(got.state, ep["state"])
    np.testing.assert_array_equal(got.action, ep["action"])
    assert len(load_demos(tmp_path, successful_only=False).episodes) == 2
    assert [s.seed for s in data.scenes] == [7]  # the first frame of a demo is a VQA scene


def test_crash_mid_write_keeps_earlier_episodes(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    ep = _episode(rng)
    w = _writer(tmp_path, flush_s=3600)
    w.add_episode("Reach", 0, "reach the red cube", ep["frames"], ep["state"], ep["action"], True, [])
    real = np.savez_compressed

    def crash(f, **arrays):
        real(f, **{k: arrays[k] for k in list(arrays)[:2]})  # part of the file is on disk, then the crash
        raise KeyboardInterrupt

    monkeypatch.setattr(ds.np, "savez_compressed", crash)
    with pytest.raises(KeyboardInterrupt), w:  # the recorder closes its writer however it stops
        w.add_episode("Reach", 1, "reach the blue ball", ep["frames"], ep["state"], ep["action"], True, [])
    monkeypatch.undo()
    assert [e["seed"] for e in read_index(tmp_path)["episodes"]] == [0]
    assert sorted(p.name for p in (tmp_path / "episodes").iterdir()) == ["Reach-000000.npz"]  # no temp left
    assert len(load_demos(tmp_path).episodes) == 1
    w2 = _writer(tmp_path)  # a restarted recorder continues after the surviving episode
    assert w2.has("episodes", "Reach", 0) and not w2.has("episodes", "Reach", 1)


def test_damaged_and_mismatched_files_are_clear_errors(tmp_path):
    rng = np.random.default_rng(2)
    ep = _episode(rng)
    with _writer(tmp_path) as w:
        w.add_episode("Reach", 0, "reach the red cube", ep["frames"], ep["state"], ep["action"], True, [])
    path = tmp_path / "episodes" / "Reach-000000.npz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DatasetError, match="Reach-000000.npz: damaged"):
        load_demos(tmp_path)
    with pytest.raises(DatasetError, match="cameras"):
        load_demos(tmp_path, cameras=("wrist_image",))
    with pytest.raises(DatasetError, match="differs in"):
        DemoWriter(tmp_path, NAMES_A, NAMES_S, 0.1, 16, ["image"])
    with pytest.raises(DatasetError, match="no dataset index"):
        load_demos(tmp_path / "nowhere")


def test_codec_from_data_leaves_a_binary_gripper_unnormalized(tmp_path):
    rng = np.random.default_rng(3)
    eps = [_episode(rng, 20) for _ in range(3)]
    with _writer(tmp_path) as w:
        for i, ep in enumerate(eps):
            w.add_episode("Reach", i, "reach the red cube", ep["frames"], ep["state"], ep["action"], True, [])
    codec = compute_codec(load_demos(tmp_path), chunk=4)
    actions = np.concatenate([e["action"] for e in eps])
    assert codec.action.normalize == [True, True, False]
    np.testing.assert_allclose(codec.action.q01, np.quantile(actions, 0.01, axis=0))
    np.testing.assert_allclose(codec.state.q99, np.quantile(np.concatenate([e["state"] for e in eps]), 0.99, 0))
    assert codec.chunk == 4 and codec.action.names == NAMES_A


@pytest.fixture(scope="module")
def tokenizer(recorded, tmp_path_factory):
    from uio_robot.policies.train import tokenizer_texts

    path = tmp_path_factory.mktemp("tok") / "t.model"
    train_tokenizer(tokenizer_texts(load_demos(recorded)), path, vocab_size=300)
    return UIO2Tokenizer(path)


def test_a_tokenizer_trained_on_one_object_scenes_still_has_pieces_for_every_suite_word(tmp_path):
    """A curriculum's first stage sees no "left" or "behind"; its tokenizer must not spell them in bytes."""
    from uio_robot.envs.vocabulary import suite_vocabulary
    from uio_robot.policies.recipe import ModelRecipe
    from uio_robot.policies.train import tokenizer_texts

    one = tmp_path / "one"
    assert record_demos.main(["--out", str(one), "--tasks", "ReachOne", "--episodes", "2", "--vqa-scenes", "2",
                              "--vqa-tasks", "ReachOne", "--image-size", "32"]) == 0
    texts = tokenizer_texts(load_demos(one))
    suite = set(suite_vocabulary())
    assert not any("left" in t.split() for t in texts if t not in suite)  # the data alone lacks it
    path = train_tokenizer(texts, tmp_path / "t.model", vocab_size=ModelRecipe().tokenizer_pieces)
    sp = spm.SentencePieceProcessor(model_file=str(path))
    for text in suite:
        pieces = sp.encode(text, out_type=str)
        assert not any(p.startswith("<0x") for p in pieces), f"{text!r} spelled in bytes: {pieces}"
    for word in ("left", "right", "behind", "3", "yes", "robot"):
        assert sp.encode(word, out_type=str) == ["▁" + word], word


def test_action_examples_encode_the_chunk_and_state(recorded, tokenizer):
    data = load_demos(recorded)
    codec = compute_codec(data, chunk=4)
    fmt = ExampleFormat(ActionFormat(chunk=4, state_dims=(0, 1, 2)), codec, 64, 32, 2, 128)
    examples = ActionExamples(data.episodes, tokenizer, fmt)
    assert len(examples) == sum(len(e.action) for e in data.episodes)
    ep = data.episodes[0]
    last = len(ep.action) - 1
    ex = examples[last]  # the final step: the chunk is padded by repeating the last action
    ids = ex["targets/text/targets"]
    assert ids[-1] == tokenizer.eos_id and len(ids) == 4 * 5 + 1
    bins = np.array([tokenizer.location_bin(int(i)) for i in ids[:-1]])
    expected = np.repeat(ep.action[last:], 4, axis=0)
    np.testing.assert_array_equal(bins, codec.encode_actions(expected))
    lo, hi = np.array(codec.action.q01), np.array(codec.action.q99)
    inside = np.where(codec.action.normalize, np.clip(expected, lo, hi), expected)  # the codec clamps
    assert np.all(np.abs(codec.decode_actions(bins) - inside) <= codec.action.half_bin() + 1e-6)
    prompt = tokenizer.decode(ex["inputs/text/tokens"].tolist())
    assert ep.instruction in prompt and "robot state" in prompt
    assert sum(tokenizer.is_location(int(i)) for i in ex["inputs/text/tokens"]) == 3  # three state dims
    assert ex["inputs/image/input"].shape == (16, 768)


def test_vqa_split_and_mixture(recorded, tokenizer):
    data = load_demos(recorded)
    codec = compute_codec(data, chunk=2)
    fmt = ExampleFormat(ActionFormat(chunk=2), codec, 64, 32, 2, 128)
    train_vqa = VQAExamples(data.scenes, tokenizer, fmt, split="train")
    held = VQAExamples(data.scenes, tokenizer, fmt, split="heldout")
    train_seeds = {train_vqa.pair(i)[0].seed for i in range(len(train_vqa))}
    held_seeds = {held.pair(i)[0].seed for i in range(len(held))}
    assert 0 in held_seeds and 0 not in train_seeds  # every tenth seed's questions are held out
    where = [i for i in range(len(train_vqa)) if train_vqa.pair(i)[1]["kind"] == "where"]
    ids = train_vqa[where[0]]["targets/text/targets"]
    assert len(ids) == 3 and all(tokenizer.is_location(int(i)) for i in ids[:2])  # y, x location tokens
    weighted = VQAExamples(data.scenes, tokenizer, fmt, split="train", repeat={"where": 3})
    assert len(weighted) == len(train_vqa) + 2 * len(where)
    shapes = [i for i in range(len(train_vqa)) if train_vqa.pair(i)[1]["kind"] == "shape"]
    both = VQAExamples(data.scenes, tokenizer, fmt, split="train", repeat={"where": 2, "shape": 4})
    assert shapes and len(both) == len(train_vqa) + len(where) + 3 * len(shapes)
    only_where = VQAExamples(data.scenes, tokenizer, fmt, split="train", kinds=["where"])
    assert len(only_where) == len(where)
    assert {only_where.pair(i)[1]["kind"] for i in range(len(only_where))} == {"where"}
    actions = ActionExamples(data.episodes, tokenizer, fmt)
    mixed = MixedExamples(actions, train_vqa, vqa_fraction=0.25)
    assert len(mixed) == len(actions) + round(len(actions) / 3)
    kinds = [int(mixed[i]["meta/is_action"][0]) for i in range(len(mixed))]
    assert sum(kinds) == len(actions)
    first = mixed[len(actions)]["targets/text/targets"]
    mixed.set_epoch(1)  # the next epoch's VQA slots move on to other pairs
    assert not np.array_equal(first, mixed[len(actions)]["targets/text/targets"])
    scarce = MixedExamples(actions, only_where, vqa_fraction=0.9)  # fewer pairs than 90% asks for: they repeat
    assert len(only_where) < 9 * len(actions) and len(scarce) == len(actions) * 10


def test_two_recorders_in_one_directory_keep_each_others_entries(tmp_path):
    ep = _episode(np.random.default_rng(3))
    a, b = _writer(tmp_path, flush_s=0), _writer(tmp_path, flush_s=3600)  # a flushes every entry, b at close
    for seed in range(3):  # interleaved, as two recorder processes side by side write
        for w, task in ((a, "Reach"), (b, "Push")):
            w.add_episode(task, seed, "reach the red cube", ep["frames"], ep["state"], ep["action"], True, [])
    b.add_scene("Push", 9, "push the cube", ep["frames"]["image"][0], [])
    a.add_episode("Reach", 0, "reach the red cube", ep["frames"], ep["state"], ep["action"], True, [])  # again
    b.close()
    a.add_episode("Reach", 3, "reach the red cube", ep["frames"], ep["state"], ep["action"], True, [])
    a.close()
    index = read_index(tmp_path)
    assert sorted((e["task"], e["seed"]) for e in index["episodes"]) == [
        ("Push", 0), ("Push", 1), ("Push", 2), ("Reach", 0), ("Reach", 1), ("Reach", 2), ("Reach", 3)]
    assert [e["seed"] for e in index["scenes"]] == [9]
    assert len(load_demos(tmp_path).episodes) == 7


def test_the_index_is_rewritten_every_few_seconds_not_after_every_file(tmp_path, monkeypatch):
    """Rewriting a growing index after each file made long recordings quadratic."""
    writes = []
    real = ds.atomic_write_bytes
    monkeypatch.setattr(ds, "atomic_write_bytes", lambda path, data: (writes.append(path), real(path, data)))
    ep = _episode(np.random.default_rng(4))
    with _writer(tmp_path, flush_s=3600) as w:
        for seed in range(20):
            w.add_episode("Reach", seed, "reach the red cube", ep["frames"], ep["state"], ep["action"], True, [])
        assert not (tmp_path / "index.json").exists() and w.has("episodes", "Reach", 19)
    assert len(writes) == 1 and len(read_index(tmp_path)["episodes"]) == 20


def test_a_recorder_stopped_with_sigterm_lists_every_file_it_wrote(tmp_path):
    """`kill`/`timeout` end a recording like Ctrl-C: nothing written goes missing from the index."""
    out = tmp_path / "demos"
    proc = subprocess.Popen([sys.executable, "-m", "uio_robot.agent.record_demos", "--out", str(out), "--tasks",
                             "ReachOne", "--episodes", "0", "--vqa-scenes", "5000", "--vqa-tasks", "ReachOne",
                             "--image-size", "32"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("scenes/*.npz"))) < 20 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the recorder ended before it could be stopped"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    written = {p.relative_to(out).as_posix() for p in out.glob("scenes/*.npz")}
    assert len(written) >= 20 and {e["file"] for e in read_index(out)["scenes"]} == written
