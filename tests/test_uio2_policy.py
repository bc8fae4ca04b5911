"""UIO2Policy with a tiny random-weight checkpoint: chunks in robot units, constrained decoding, layout
checks at start, reload determinism, history by time, queries with the between-steps hook, grounding."""

import json
import shutil

import numpy as np
import pytest
from tiny_policy import ACTION_LOW, ACTION_NAMES, STATE_NAMES, make_tiny_checkpoint

from uio_robot.agent import cli
from uio_robot.policies.codec import CodecMismatch
from uio_robot.policies.factory import build_policy
from uio_robot.policies.types import ArraySpec, InvalidObservation, Observation
from uio_robot.policies.uio2.checkpoint import CheckpointError
from uio_robot.policies.uio2_policy import (
    UIO2Policy,
    _FrameHistory,
    history_frame_steps,
    input_to_original,
    parse_uv,
)

ACTION_SPEC = ArraySpec(ACTION_NAMES, ACTION_LOW, -ACTION_LOW)
STATE_SPEC = ArraySpec(STATE_NAMES, np.full(12, -5.0), np.full(12, 5.0))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "tiny", chunk=3, history=2)


@pytest.fixture(scope="module")
def policy(checkpoint):
    return UIO2Policy(checkpoint, device="cpu", dtype="float32")


def _obs(seed: int, t: float = 0.0, size=(96, 128)) -> Observation:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    return Observation({"image": image}, rng.normal(0, 0.3, 12).astype(np.float32), "pick up the red cube", t)


def test_act_returns_chunk_in_robot_units_within_bounds(policy):
    policy.reset()
    chunk = policy.act(_obs(0, t=12.5))
    assert chunk.actions.shape == (3, 5) and chunk.actions.dtype == np.float32
    assert chunk.start_time == 12.5 and chunk.period == pytest.approx(0.05)
    assert np.all(chunk.actions >= ACTION_LOW - 1e-6) and np.all(chunk.actions <= -ACTION_LOW + 1e-6)
    # the actions are exactly the codec's decoding of the emitted bins
    np.testing.assert_array_equal(chunk.actions, policy.codec.decode_actions(chunk.info["bins"]))


def test_constrained_decoding_emits_exactly_the_chunk_of_location_tokens(policy):
    policy.reset()
    chunks = policy.act_batch([_obs(1), _obs(2)])
    tok = policy.tokenizer
    for chunk in chunks:
        ids = chunk.info["tokens"]
        assert len(ids) == policy.tokens_per_chunk == 15  # no EOS, no extra token
        assert all(tok.is_location(i) for i in ids)
    # the mask allows exactly the 1000 location ids
    allowed = np.flatnonzero(policy._action_mask.cpu().numpy())
    np.testing.assert_array_equal(allowed, tok.location_token_ids())


def test_layout_mismatch_is_rejected_at_start(checkpoint):
    wrong_action = ArraySpec(("dx", "dy", "dz"), np.full(3, -1.0), np.full(3, 1.0))
    with pytest.raises(CodecMismatch, match="action: checkpoint has 5 dims"):
        build_policy("uio2", wrong_action, STATE_SPEC, checkpoint=str(checkpoint), device="cpu")
    renamed = ArraySpec(tuple(f"s{i}" for i in range(12)), STATE_SPEC.low, STATE_SPEC.high)
    with pytest.raises(CodecMismatch, match="state: checkpoint has 12 dims"):
        build_policy("uio2", ACTION_SPEC, renamed, checkpoint=str(checkpoint), device="cpu")
    assert isinstance(build_policy("uio2", ACTION_SPEC, STATE_SPEC, checkpoint=str(checkpoint), device="cpu"),
                      UIO2Policy)


def test_altered_statistics_are_rejected_at_load(checkpoint, tmp_path):
    copy = shutil.copytree(checkpoint, tmp_path / "altered")
    meta = json.loads((copy / "uio_robot.json").read_text())
    meta["codec"]["action"]["q99"][0] *= 2  # content no longer matches the stored hash
    (copy / "uio_robot.json").write_text(json.dumps(meta))
    with pytest.raises(CodecMismatch, match="hash"):
        UIO2Policy(copy, device="cpu")
    (copy / "uio_robot.json").unlink()
    with pytest.raises(CheckpointError, match="not a policy checkpoint"):
        UIO2Policy(copy, device="cpu")


def test_reloaded_policy_gives_identical_actions(checkpoint, policy):
    other = UIO2Policy(checkpoint, device="cpu", dtype="float32")
    policy.reset()
    for step in range(4):  # history frames come into play after the first request
        obs = _obs(10 + step, t=step * 0.2)
        a, b = policy.act(obs), other.act(obs)
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.info["tokens"], b.info["tokens"])


def test_batch_gives_the_same_chunks_as_single_requests(checkpoint, policy):
    obs = [_obs(20, size=(64, 64)), _obs(21, size=(128, 96))]
    policy.reset()
    together = policy.act_batch(obs, streams=["a", "b"])
    for o, chunk in zip(obs, together):
        policy.reset()
        np.testing.assert_array_equal(policy.act(o).info["tokens"], chunk.info["tokens"])


def test_invalid_observations_are_clear_errors(policy):
    good = _obs(3)
    nan_state = Observation(good.images, np.full(12, np.nan, np.float32), "go", 0.0)
    with pytest.raises(InvalidObservation, match="non-finite"):
        policy.act(nan_state)
    with pytest.raises(InvalidObservation, match="expected 12 values"):
        policy.act(Observation(good.images, np.zeros(5, np.float32), "go", 0.0))
    with pytest.raises(InvalidObservation, match="'image'.*missing"):
        policy.act(Observation({"wrist_image": good.images["image"]}, good.state, "go", 0.0))
    with pytest.raises(InvalidObservation, match="dtype uint8"):
        policy.act(Observation({"image": good.images["image"].astype(np.float32)}, good.state, "go", 0.0))
    with pytest.raises(InvalidObservation, match="instruction"):
        policy.act(Observation(good.images, good.state, "   ", 0.0))


def test_history_frames_are_chosen_by_time():
    frames = _FrameHistory(size=6)
    images = [np.full((2, 2, 3), i, np.uint8) for i in range(5)]
    # first request: nothing stored yet, the current frame stands in for every history slot
    assert [int(f[0, 0, 0]) for f in frames.select(0.0, images[0], [0.2, 0.1], 0.025)] == [0, 0]
    for i in range(4):  # requests every 0.2 s (every 4 control steps of 0.05 s)
        frames.add(0.2 * i, images[i])
    picked = frames.select(0.8, images[4], [0.4, 0.2], 0.025)  # 2 frames, stride 4 steps
    assert [int(f[0, 0, 0]) for f in picked] == [2, 3]
    picked = frames.select(0.8, images[4], [0.3, 0.1], 0.025)  # between stored frames: the older one
    assert [int(f[0, 0, 0]) for f in picked] == [2, 3]
    assert history_frame_steps(5, 3, 2) == [0, 1, 3] and history_frame_steps(1, 2, 1) == [0, 0]


def test_query_returns_text_and_calls_the_hook(policy):
    calls = []
    answer = policy.query(_obs(4).images, "what colour is the cube?", between_steps=lambda: calls.append(1),
                          max_new_tokens=6)
    assert isinstance(answer, str) and answer
    assert 1 <= len(calls) <= 5  # called between decode steps, never before the first
    assert policy.query({}, "how many objects are on the table?", max_new_tokens=3) != ""  # text only
    with pytest.raises(ValueError, match="empty"):
        policy.query(_obs(4).images, "  ")


def test_grounding_maps_back_to_original_pixels(policy):
    # a 128 (h) x 64 (w) image is resized to 64x32 and padded left/right by 16 in the 64-px input
    info = np.array([0, 16, 2.0, 128, 64, 0, 0, 0, 0, 64, 32], np.float32)
    np.testing.assert_allclose(input_to_original(np.array([[0.5, 0.5]]), info, 64), [[64.0, 32.0]])
    np.testing.assert_allclose(input_to_original(np.array([[0.0, 0.0], [1.0, 1.0]]), info, 64),
                               [[0.0, 0.0], [128.0, 64.0]])  # padding clamps to the image
    assert parse_uv("0.25 0.75") == (0.25, 0.75) and parse_uv("red") is None
    tok, image = policy.tokenizer, np.zeros((128, 64, 3), np.uint8)
    # a "where" answer as two location tokens (y, x) of the image input
    g = policy._grounding([tok.location_token(499), tok.location_token(624)], info, image)
    assert g.point is not None
    assert g.point[0] == pytest.approx((0.625 * 64 - 16) * 2, abs=0.2)
    assert g.point[1] == pytest.approx(0.5 * 64 * 2, abs=0.2)
    box = policy._grounding([tok.location_token(b) for b in (0, 249, 999, 749)], info, image).box
    assert box == pytest.approx((0.0, 0.0, 64.0, 128.0), abs=0.2) and box is not None
    uv = policy._grounding(tok.encode("0.25 0.75"), info, image)  # the simulator's text format
    assert uv.answer == "0.25 0.75" and uv.point == pytest.approx((16.0, 96.0))
    assert policy._grounding(tok.encode("red"), info, image).point is None
    g = policy.ground(_obs(5).images, "where is the red ball?", max_new_tokens=4)  # the full path runs
    assert isinstance(g.answer, str)


def test_bfloat16_policy_acts(checkpoint):
    policy = UIO2Policy(checkpoint, device="cpu", dtype="bfloat16")
    chunk = policy.act(_obs(6))
    assert chunk.actions.shape == (3, 5) and np.all(np.isfinite(chunk.actions))


def test_query_command(checkpoint, policy, tmp_path, capsys):
    import cv2

    from uio_robot.agent import query_cli

    image = tmp_path / "scene.png"
    pixels = _obs(7, size=(48, 80)).images["image"]
    cv2.imwrite(str(image), pixels[:, :, ::-1])  # PNG is lossless: the command sees the same pixels
    expected = policy.ground({"image": pixels}, "where is the red ball?", max_new_tokens=2)
    rc = query_cli.main(["--image", str(image), "--question", "where is the red ball?", "--max-tokens", "2",
                         f"policy.checkpoint={checkpoint}", "policy.device=cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "Q: where is the red ball?" in out and "\nA: " in out
    assert f"A: {expected.answer}\n" in out
    assert ("point (x, y) in pixels of the 80x48 image" in out) == (expected.point is not None)
    rc = cli.main(["query", "--image", str(tmp_path / "missing.png"), "--question", "hi",
                         f"policy.checkpoint={checkpoint}"])
    assert rc == 2 and "image file not found" in capsys.readouterr().err


def test_fast_generation_path_gives_the_same_outputs(checkpoint, policy):
    fast = UIO2Policy(checkpoint, device="cpu", dtype="float32", fast=True)
    assert fast._fast_control is not None and policy._fast_control is None  # plain path by default on a CPU
    obs = [_obs(30 + i, t=0.1 * i) for i in range(3)]
    policy.reset()
    for o in obs:
        np.testing.assert_array_equal(fast.act(o).info["tokens"], policy.act(o).info["tokens"])
    calls = []
    question = "how many objects are on the table?"
    assert fast.query(obs[0].images, question, lambda: calls.append(1)) == policy.query(obs[0].images, question)
    assert calls
