"""UIO2 preprocessing: reproduce the reference tensors from the raw PNGs, batching, resize, bad input."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from uio_robot.policies.types import InvalidObservation
from uio_robot.policies.uio2.preprocess import (
    _tf_resize_weights,
    build_batch,
    load_image,
    patchify,
    preprocess_example,
    preprocess_image,
    preprocess_image_torch,
    resize_and_pad,
    tf_resize_bilinear,
)
from uio_robot.policies.uio2.tokenizer import UIO2Tokenizer

# Achieved with the numpy TF-resize: 1.55e-6 (main image) and 9.5e-7 (history) in normalized units.
PIXEL_TOL = 1e-5


@pytest.fixture(scope="module")
def ref_dir(shared_dir):
    return shared_dir / "uio2_reference"


@pytest.fixture(scope="module")
def tok(ref_dir):
    return UIO2Tokenizer(ref_dir / "tokenizer.model")


@pytest.fixture(scope="module")
def raw(ref_dir):
    return json.loads((ref_dir / "raw.json").read_text())


@pytest.fixture(scope="module")
def examples(tok, raw, ref_dir):
    out = []
    for ex in raw["examples"]:
        history = [ref_dir / h for h in ex["image_history"]] if ex["image_history"] else None
        out.append(preprocess_example(tok, ex["text_inputs"], ref_dir / ex["image"], history, ex["text_targets"]))
    return out


@pytest.fixture(scope="module")
def reference(ref_dir):
    return load_file(ref_dir / "preprocessed.safetensors")


def test_reproduces_reference_preprocessing(examples, reference):
    batch = build_batch(examples)
    assert sorted(batch) == sorted(reference)
    for key, ref in reference.items():
        got = batch[key]
        assert got.shape == ref.shape and got.dtype == ref.dtype, key
        if ref.dtype.kind == "i":
            np.testing.assert_array_equal(got, ref, err_msg=key)
    np.testing.assert_allclose(batch["meta/image_info"], reference["meta/image_info"], rtol=0, atol=1e-6)
    for key in ("inputs/image", "inputs/image_history"):
        valid = reference[f"{key}/mask"].astype(bool)
        diff = np.abs(batch[f"{key}/input"] - reference[f"{key}/input"])
        assert diff[valid].max() <= PIXEL_TOL, key
        assert diff.max() <= PIXEL_TOL, key  # padding pixels and empty frames too


def test_example_structure(examples, tok):
    ex0, ex1 = examples
    assert "inputs/image_history/input" not in ex1
    assert ex0["inputs/image_history/input"].shape == (4, 256, 768)
    assert ex0["inputs/image_history/mask"][2:].sum() == 0 and not ex0["inputs/image_history/input"][2:].any()
    np.testing.assert_array_equal(ex0["inputs/image_history/pos_ids"], np.tile(np.arange(256), (4, 1)))
    assert ex0["inputs/text/tokens"][0] == tok.prefix_id("[Text] [S]") and ex0["inputs/text/tokens"][-1] == 1
    t = ex0["targets/text/targets"]
    np.testing.assert_array_equal(ex0["targets/text/inputs"], np.concatenate([[0], t[:-1]]))


def test_build_batch_padding_and_zero_fill(examples, tok):
    batch = build_batch(examples)
    n0, n1 = (ex["inputs/text/tokens"].size for ex in examples)
    assert batch["inputs/text/tokens"].shape == (2, max(n0, n1))
    assert batch["inputs/text/mask"][1, n1:].sum() == 0 and batch["inputs/text/mask"][1, :n1].all()
    for key in ("input", "mask", "pos_ids"):
        assert not batch[f"inputs/image_history/{key}"][1].any()  # example 1 has no history
    # an example without targets: zero-filled target keys
    no_target = preprocess_example(tok, "describe the scene")
    assert not any(k.startswith(("targets/", "inputs/image")) for k in no_target)
    batch = build_batch([examples[0], no_target])
    assert batch["targets/text/targets"].shape == (2, examples[0]["targets/text/targets"].size)
    assert not batch["targets/text/mask"][1].any()
    with pytest.raises(ValueError, match="inconsistent"):
        build_batch([{"x": np.zeros((2, 3))}, {"x": np.zeros((2, 4))}])
    with pytest.raises(ValueError, match="no examples"):
        build_batch([])


def test_resize_weights_by_hand():
    # shrink 4 -> 2: kernel widened to 2 pixels, centres at 1.0 and 3.0
    w = _tf_resize_weights(4, 2)
    np.testing.assert_allclose(w[0], np.array([0.75, 0.75, 0.25, 0.0]) / 1.75, rtol=1e-6)
    np.testing.assert_allclose(w[1], np.array([0.0, 0.25, 0.75, 0.75]) / 1.75, rtol=1e-6)
    # enlarge 2 -> 4: plain bilinear with half-pixel centres, clamped at the border
    w = _tf_resize_weights(2, 4)
    np.testing.assert_allclose(w, [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]], rtol=1e-6)
    assert np.allclose(_tf_resize_weights(300, 288).sum(axis=1), 1.0, atol=1e-6)


def test_upsampling_small_image():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    pixels, mask, info = resize_and_pad(small, 384, 384)
    # scale = min(384/20, 384/30) = 12.8 -> 256 x 384, centred vertically
    np.testing.assert_allclose(info, [64, 0, 1 / 12.8, 20, 30, 0, 0, 0, 0, 256, 384], rtol=1e-6)
    assert mask[64:320].all() and not mask[:64].any() and not mask[320:].any()
    # a linear ramp stays linear inside the image when enlarging
    ramp = np.tile(np.linspace(0, 1, 30, dtype=np.float32)[None, :, None], (20, 1, 3))
    up = tf_resize_bilinear(ramp, 256, 384)
    inner = up[:, 20:-20, 0]
    np.testing.assert_allclose(np.diff(inner, 2, axis=1), 0, atol=1e-6)
    # and agrees with torch's bilinear resize (same filter when enlarging)
    patches, pmask, _ = preprocess_image(small, 384)
    t_patches, t_mask, _ = preprocess_image_torch(torch.from_numpy(small), 384)
    np.testing.assert_array_equal(t_mask.numpy(), pmask)
    assert np.abs(t_patches.numpy() - patches).max() < 1e-4


def test_torch_path_agrees_with_numpy(ref_dir, reference):
    for i, name in enumerate(("raw_image.png", "raw_image_1.png")):
        image = load_image(ref_dir / name)
        patches, mask, info = preprocess_image_torch(torch.from_numpy(image), 384)
        assert patches.dtype == torch.float32 and patches.shape == (576, 768)
        np.testing.assert_array_equal(mask.numpy(), reference["inputs/image/mask"][i])
        np.testing.assert_allclose(info.numpy(), reference["meta/image_info"][i], atol=1e-6)
        assert np.abs(patches.numpy() - reference["inputs/image/input"][i]).max() < 1e-3


def test_patchify_order():
    image = np.arange(32 * 48 * 3, dtype=np.float32).reshape(32, 48, 3)
    patches = patchify(image)
    assert patches.shape == (6, 768)
    np.testing.assert_array_equal(patches[4], image[16:32, 16:32].reshape(-1))  # row 1, column 1
    with pytest.raises(ValueError, match="multiple"):
        patchify(np.zeros((20, 32, 3), np.float32))


def test_history_frames_truncated_to_newest_and_ordered(tok):
    frames = [np.full((64, 64, 3), 40 * k, dtype=np.uint8) for k in range(6)]
    ex = preprocess_example(tok, "pick", image_history=frames, num_frames=4)
    expected = np.stack([preprocess_image(f, 256)[0] for f in frames[2:]])
    np.testing.assert_array_equal(ex["inputs/image_history/input"], expected)
    assert ex["inputs/image_history/mask"].all()


def test_text_truncation(tok):
    ex = preprocess_example(tok, "block " * 800, max_text_len=512)
    tokens = ex["inputs/text/tokens"]
    assert tokens.size == 512 and tokens[-1] == tok.eos_id and (tokens[:-1] != tok.eos_id).all()
    np.testing.assert_array_equal(ex["inputs/text/pos_ids"], np.arange(512))


def test_bad_inputs(tok, tmp_path):
    with pytest.raises(InvalidObservation, match="float32"):
        preprocess_example(tok, "pick", image=np.zeros((32, 32, 3), np.float32))
    with pytest.raises(InvalidObservation, match=r"\(32, 32\)"):
        preprocess_example(tok, "pick", image=np.zeros((32, 32), np.uint8))
    with pytest.raises(InvalidObservation, match=r"image_history\[1\].*\(8, 8, 4\)"):
        preprocess_example(tok, "pick", image_history=[np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 4), np.uint8)])
    with pytest.raises(ValueError, match="non-empty prompt"):
        preprocess_example(tok, "   ")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        preprocess_example(tok, "pick", image=tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot decode"):
        preprocess_example(tok, "pick", image=bad)
    with pytest.raises(ValueError, match="uint8"):
        preprocess_image_torch(torch.zeros((8, 8, 3)), 256)
    with pytest.raises(ValueError, match="HxWx3"):
        preprocess_image_torch(torch.zeros((8, 8), dtype=torch.uint8), 256)


def test_patch_mask_uses_patch_centre_pixel():
    # 100 x 384 fits unscaled; top_pad = 142, so patch rows 8 (pixels 128..143) and 15 (240..255) hold a
    # few image rows but their centre pixels (136, 248) are padding.
    image = np.full((100, 384, 3), 200, dtype=np.uint8)
    _, mask, info = preprocess_image(image, 384)
    assert info[0] == 142 and info[2] == 1.0
    rows = mask.reshape(24, 24).all(axis=1)
    assert rows.nonzero()[0].tolist() == list(range(9, 15))
    assert mask.reshape(24, 24)[~rows].sum() == 0
