"""UIO2 on VIMA-style tasks: multimodal prompt encoding, the primitive-action codec and
`UIO2PrimitivePolicy` with a tiny random-weight checkpoint acting in the native env."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_policy import TEXTS, tiny_config

from uio_robot.envs.vima import ACTION_HIGH, ACTION_LOW, VimaEnv, observation_prompt
from uio_robot.policies.prompts import ActionFormat
from uio_robot.policies.types import InvalidObservation, Observation
from uio_robot.policies.uio2.checkpoint import CheckpointError, save_checkpoint
from uio_robot.policies.uio2.config import round_vocab
from uio_robot.policies.uio2.model import UIO2Model
from uio_robot.policies.uio2.tokenizer import train_tokenizer
from uio_robot.policies.uio2_primitive_policy import UIO2PrimitivePolicy
from uio_robot.policies.vima_prompts import (
    PRIMITIVE_ACTION_NAMES,
    PROMPT_FORMAT,
    multimodal_prompt,
    primitive_codec,
    primitive_target,
)


def make_primitive_checkpoint(directory, prompt_format=PROMPT_FORMAT, num_frames=2):
    tok = train_tokenizer(TEXTS, directory.parent / f".{directory.name}-tok" / "tok.model", vocab_size=300)
    model = UIO2Model(tiny_config(round_vocab(300), num_frames=num_frames)).init_weights(0)
    meta = {"codec": primitive_codec(ACTION_LOW, ACTION_HIGH).to_dict(),
            "action_format": ActionFormat(chunk=1, camera="top_image").to_dict(),
            "prompt_format": prompt_format, "control_period_s": 1.0}
    return save_checkpoint(model, directory, tokenizer=tok, metadata=meta)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return UIO2PrimitivePolicy(make_primitive_checkpoint(tmp_path_factory.mktemp("ck") / "vima"),
                               device="cpu", dtype="float32")


def _image(seed, size=(48, 64)):
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def test_multimodal_prompt_puts_images_into_the_history_in_order():
    a, b = _image(1), _image(2)
    text, images = multimodal_prompt(["put the ", a, "  into the", b, "."], max_images=4)
    assert text == "put the <image_history_1> into the <image_history_2> ."
    assert images[0] is a and images[1] is b
    assert multimodal_prompt("reach the cube", 2) == ("reach the cube", [])
    with pytest.raises(ValueError, match="3 images, but the model takes at most 2"):
        multimodal_prompt([a, b, a], max_images=2)
    with pytest.raises(InvalidObservation, match="instruction part 1"):
        multimodal_prompt(["x", a[:, :, 0]], max_images=2)
    with pytest.raises(ValueError, match="empty"):
        multimodal_prompt([" "], max_images=2)


def test_primitive_codec_round_trip_and_target():
    codec = primitive_codec(ACTION_LOW, ACTION_HIGH)
    assert tuple(codec.action.names) == PRIMITIVE_ACTION_NAMES and codec.state.names == []
    rng = np.random.default_rng(0)
    actions = rng.uniform(ACTION_LOW, ACTION_HIGH, size=(200, 6))
    back = codec.decode_actions(codec.encode_actions(actions))
    assert np.all(np.abs(back - actions) <= codec.action.half_bin() + 1e-6)
    np.testing.assert_array_equal(codec.encode_actions(ACTION_LOW[None]), np.zeros(6))
    np.testing.assert_array_equal(codec.encode_actions(ACTION_HIGH[None]), np.full(6, 999))
    target = primitive_target(codec, actions[0])
    assert len(target.split()) == 6 and all(t.startswith("<extra_id_") for t in target.split())
    with pytest.raises(ValueError, match="high must exceed low"):
        primitive_codec(ACTION_HIGH, ACTION_LOW)


def test_policy_acts_in_the_native_env_with_the_prompt_in_the_history(policy):
    env = VimaEnv("VisualManipulation", image_size=64)
    raw, _ = env.reset(seed=4)
    parts = observation_prompt(raw)
    obs = Observation({"image": raw["image"], "top_image": raw["top_image"]}, np.zeros(0, np.float32), parts, 0.0)
    example = policy._control_example(obs, "s")
    assert example["inputs/image_history/mask"].sum(axis=1).tolist()[:2] == [4, 4]  # both prompt images
    ids = example["inputs/text/tokens"].tolist()
    tok = policy.tokenizer
    assert ids.index(tok.history_token(1)) < ids.index(tok.history_token(2))
    chunk = policy.act(obs)
    assert chunk.actions.shape == (1, 6)
    assert np.all(chunk.actions >= ACTION_LOW - 1e-6) and np.all(chunk.actions <= ACTION_HIGH + 1e-6)
    np.testing.assert_allclose(chunk.actions, policy.codec.decode_actions(chunk.info["bins"]))
    _, _, terminated, truncated, info = env.step(chunk.actions[0])
    assert "is_success" in info and isinstance(terminated, bool)
    # batched requests give the same primitive as single ones
    again = policy.act_batch([obs, obs], ["a", "b"])
    np.testing.assert_array_equal(again[0].actions, chunk.actions)
    env.close()


def test_policy_rejects_bad_prompts_and_checkpoints(policy, tmp_path):
    too_many = ["a", _image(1), _image(2), _image(3)]
    with pytest.raises(InvalidObservation, match="at most 2"):
        policy.act(Observation({"top_image": _image(0)}, np.zeros(0, np.float32), too_many))
    with pytest.raises(InvalidObservation, match="top_image"):
        policy.act(Observation({"image": _image(0)}, np.zeros(0, np.float32), "put it there"))
    with pytest.raises(CheckpointError, match="prompt_format"):
        UIO2PrimitivePolicy(make_primitive_checkpoint(tmp_path / "other", prompt_format="text"), device="cpu",
                            dtype="float32")
