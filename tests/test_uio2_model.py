"""The UIO2 network reproduces the reference test vectors (../shared/uio2_reference) within the
tolerances of its README: embedder outputs, encoder, rotary tables, teacher-forced logits, losses,
and greedy generation (identical ids)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

from uio_robot.agent.cli import main as cli_main
from uio_robot.policies.uio2.checkpoint import load_model
from uio_robot.policies.uio2.generate import generate
from uio_robot.policies.uio2.model import to_batch


@pytest.fixture(scope="module")
def ref(shared_dir):
    root = shared_dir / "uio2_reference"
    return {"root": root, "pre": load_file(str(root / "preprocessed.safetensors")),
            "exp": load_file(str(root / "expected.safetensors"))}


@pytest.fixture(scope="module")
def model(ref):
    torch.set_num_threads(2)
    return load_model(ref["root"] / "model", dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def outputs(model, ref):
    capture = {}
    with torch.no_grad():
        capture["text_logits"] = model(to_batch(ref["pre"]), capture)
    targets = torch.from_numpy(ref["pre"]["targets/text/targets"]).long()
    capture["text_token_loss"] = F.cross_entropy(
        capture["text_logits"].flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)
    return {k: v.float().numpy() for k, v in capture.items()}


def _valid_masks(ref):
    pre, exp = ref["pre"], ref["exp"]
    frame_used = exp["image_history/mask"].reshape(2, -1, 32)[..., :1]  # [B, frames, 1]
    return {
        "text/embed": pre["inputs/text/mask"],
        "image/vit_last": pre["inputs/image/mask"],
        "image/vit_second": pre["inputs/image/mask"],
        "image/embed": pre["inputs/image/mask"],
        "image_history/vit_last": pre["inputs/image_history/mask"],
        "image_history/resampler_out": np.broadcast_to(frame_used, (2, frame_used.shape[1], 32)),
        "image_history/embed": exp["image_history/mask"],
        "encoder/hidden": exp["encoder/mask"],
        "encoder/position_embed": exp["encoder/mask"],
        "decoder/hidden": pre["targets/text/mask"],
        "decoder/position_embed": pre["targets/text/mask"],
        "text_logits": pre["targets/text/mask"],
        "text_token_loss": pre["targets/text/mask"],
    }


def _max_valid_diff(ours, theirs, mask):
    assert ours.shape == theirs.shape
    valid = np.asarray(mask) > 0
    assert valid.any()
    return float(np.abs(ours[valid] - theirs[valid]).max()), float(np.abs(theirs[valid]).max())


@pytest.mark.parametrize("key", [
    "text/embed", "image/vit_last", "image/vit_second", "image/embed", "image_history/vit_last",
    "image_history/resampler_out", "image_history/embed", "encoder/hidden", "decoder/hidden",
])
def test_float_tensors_within_tolerance(outputs, ref, key):
    diff, scale = _max_valid_diff(outputs[key], ref["exp"][key], _valid_masks(ref)[key])
    assert diff <= 1e-4 * max(1.0, scale), f"{key}: max abs diff {diff} (scale {scale})"


@pytest.mark.parametrize("key", ["encoder/position_embed", "decoder/position_embed"])
def test_rotary_tables(outputs, ref, key):
    diff, _ = _max_valid_diff(outputs[key], ref["exp"][key], _valid_masks(ref)[key])
    assert diff <= 1e-6, f"{key}: {diff}"


@pytest.mark.parametrize("key", ["text_logits", "text_token_loss"])
def test_logits_and_losses(outputs, ref, key):
    diff, scale = _max_valid_diff(outputs[key], ref["exp"][key], _valid_masks(ref)[key])
    assert diff <= 1e-3 * max(1.0, scale), f"{key}: max abs diff {diff}"


def test_masks_identical(outputs, ref):
    for key in ("encoder/mask", "image_history/mask"):
        np.testing.assert_array_equal(outputs[key].astype(np.int32), ref["exp"][key], err_msg=key)


def test_greedy_generation_identical(model, ref):
    out = generate(model, to_batch(ref["pre"]), max_new_tokens=12, min_new_tokens=12, return_top_k=5)
    exp = ref["exp"]
    np.testing.assert_array_equal(out.tokens.numpy(), exp["generation/tokens"])
    np.testing.assert_array_equal(out.top_ids.numpy(), exp["generation/top5_ids"])
    scores = exp["generation/top5_scores"]
    assert np.abs(out.top_scores.numpy() - scores).max() <= 1e-3 * max(1.0, np.abs(scores).max())


def test_padding_does_not_change_valid_outputs(model, ref, outputs):
    """Padded text ids and unused history slots filled with junk leave valid logits unchanged."""
    pre = {k: v.copy() for k, v in ref["pre"].items()}
    g = np.random.default_rng(0)
    pad = pre["inputs/text/mask"] == 0
    pre["inputs/text/tokens"][pad] = g.integers(3, 1000, pad.sum())
    unused = pre["inputs/image_history/mask"] == 0
    pre["inputs/image_history/input"][unused] = g.normal(size=(unused.sum(), 768))
    with torch.no_grad():
        logits = model(to_batch(pre)).numpy()
    diff, _ = _max_valid_diff(logits, outputs["text_logits"], pre["targets/text/mask"])
    assert diff < 1e-5


def _compare_dump(path, ref, float_keys):
    ours = load_file(str(path))
    theirs = {**ref["pre"], **ref["exp"]}
    assert set(ours) == set(theirs)
    assert all(v.dtype == np.float32 for v in ours.values())
    for key in ("generation/tokens", "generation/top5_ids", "encoder/mask", "inputs/text/tokens",
                "inputs/image/mask", "inputs/image_history/mask", "targets/text/targets"):
        np.testing.assert_array_equal(ours[key], theirs[key].astype(np.float32), err_msg=key)
    masks = _valid_masks(ref)
    for key in float_keys:
        diff, scale = _max_valid_diff(ours[key], theirs[key], masks[key])
        assert diff <= 1e-3 * max(1.0, scale), key


def test_dump_cli_from_preprocessed(ref, tmp_path):
    out = tmp_path / "ours.safetensors"
    rc = cli_main(["uio2-dump", "--model", str(ref["root"] / "model"), "--preprocessed",
                   str(ref["root"] / "preprocessed.safetensors"), "--out", str(out)])
    assert rc == 0
    _compare_dump(out, ref, ["image/vit_second", "image_history/embed", "encoder/hidden", "text_logits"])


def test_dump_cli_from_raw_inputs(ref, tmp_path):
    """Our preprocessing + network from the PNGs: integer tensors and generated ids exact."""
    out = tmp_path / "ours.safetensors"
    rc = cli_main(["uio2-dump", "--model", str(ref["root"] / "model"), "--tokenizer",
                   str(ref["root"] / "tokenizer.model"), "--raw", str(ref["root"]), "--out", str(out)])
    assert rc == 0
    _compare_dump(out, ref, ["encoder/hidden", "text_logits"])
