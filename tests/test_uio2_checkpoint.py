"""UIO2 config and checkpoint I/O: reference format, presets, clear errors, project format round trip."""

import json
import logging
import shutil

import pytest
import torch
from safetensors.numpy import load_file

from uio_robot.agent.cli import main as cli_main
from uio_robot.policies.uio2.checkpoint import (
    CheckpointError,
    load_model,
    pick_dtype,
    read_metadata,
    save_checkpoint,
    tokenizer_file,
)
from uio_robot.policies.uio2.config import UIO2Config, UIO2ConfigError, preset, round_vocab
from uio_robot.policies.uio2.model import UIO2Model, to_batch


@pytest.fixture(scope="module")
def ref_root(shared_dir):
    return shared_dir / "uio2_reference"


@pytest.fixture(scope="module")
def ref_config(ref_root):
    return json.loads((ref_root / "model" / "config.json").read_text())


@pytest.fixture(scope="module")
def batch(ref_root):
    return to_batch(load_file(str(ref_root / "preprocessed.safetensors")))


def _checkpoint_dir(tmp_path, config: dict, state: dict):
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    torch.save(state, d / "pytorch_model.bin")
    return d


# ---- config -------------------------------------------------------------------------------------

def test_reference_config_round_trips_exactly(ref_config):
    assert UIO2Config.from_dict(ref_config).to_dict() == ref_config


def test_unknown_fields_are_named(ref_config):
    with pytest.raises(UIO2ConfigError, match="unknown field.*'use_magic'"):
        UIO2Config.from_dict({**ref_config, "use_magic": True})
    bad = json.loads(json.dumps(ref_config))
    bad["t5_config"]["num_hedas"] = 4
    with pytest.raises(UIO2ConfigError, match="t5_config.num_hedas"):
        UIO2Config.from_dict(bad)
    bad = json.loads(json.dumps(ref_config))
    bad["image_history_cfg"]["latent_size"] = 4
    with pytest.raises(UIO2ConfigError, match="image_history_cfg.latent_size"):
        UIO2Config.from_dict(bad)


def test_inconsistent_sizes_are_rejected(ref_config):
    bad = json.loads(json.dumps(ref_config))
    bad["t5_config"]["emb_dim"] = 30
    with pytest.raises(UIO2ConfigError, match="t5_config.emb_dim"):
        UIO2Config.from_dict(bad)
    bad = json.loads(json.dumps(ref_config))
    bad["sequence_length"]["num_frames"] = 9
    with pytest.raises(UIO2ConfigError, match="num_frames"):
        UIO2Config.from_dict(bad)


def test_presets_have_the_released_sizes():
    expected = {"large": (1024, 16, 64, 2816), "xl": (2048, 16, 128, 5120), "xxl": (3072, 24, 128, 8192)}
    for name, (d, heads, head_dim, mlp) in expected.items():
        with torch.device("meta"):
            model = UIO2Model(preset(name))
        t = model.config.t5_config
        assert (t.emb_dim, t.num_heads, t.head_dim, t.mlp_dim) == (d, heads, head_dim, mlp)
        assert model.encoder.num_layers == model.decoder.num_layers == 24
        assert model.text_token_embedder.weight.shape == (33280, d)
        assert model.decoder.layers_23.mlp.wi_1.weight.shape == (mlp, d)
        vit = model.input_embedders["image"].image_encoder.vision_transformer
        assert len(vit.transformer.resblocks) == 11 and vit.embedding.weight.shape == (768, 768)
        assert model.input_embedders["image"].projection.weight.shape == (d, 1536)
    assert round_vocab(200) == 1536 and round_vocab(32000) == 33280
    assert preset("tiny", vocab_size=round_vocab(500)).t5_config.vocab_size == 1792


# ---- loading the reference format -----------------------------------------------------------------

def test_reference_load_skips_unused_parts_with_a_notice(ref_root, caplog):
    with caplog.at_level(logging.INFO, logger="uio_robot.policies.uio2.checkpoint"):
        model = load_model(ref_root / "model", dtype="float32", device="cpu")
    notices = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(notices) == 1 and "image_token_embedder" in notices[0] and "audio_token_embedder" in notices[0]
    assert not any(p.is_meta for p in model.parameters())
    assert not any(b.is_meta for b in model.buffers())


def test_mismatched_weights_listed_in_one_message(ref_root, ref_config, tmp_path):
    state = torch.load(ref_root / "model" / "pytorch_model.bin", weights_only=True)
    state["encoder.layers_1.mlp.wo.weight"] = torch.zeros(32, 81)
    del state["decoder.decoder_norm.scale"]
    state["decoder.layers_9.extra.weight"] = torch.zeros(3)
    d = _checkpoint_dir(tmp_path, ref_config, state)
    with pytest.raises(CheckpointError) as info:
        load_model(d, device="cpu")
    message = str(info.value)
    assert "missing (1)" in message and "decoder.decoder_norm.scale" in message
    assert "unexpected (1)" in message and "decoder.layers_9.extra.weight" in message
    assert "mis-shaped (1)" in message and "encoder.layers_1.mlp.wo.weight: checkpoint [32, 81]" in message


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.safetensors"])
def test_truncated_weights_fail_clearly(ref_root, tmp_path, name):
    model = load_model(ref_root / "model", dtype="float32", device="cpu")
    good = save_checkpoint(model, tmp_path / "good")
    d = tmp_path / "bad"
    d.mkdir()
    shutil.copy(good / "config.json", d)
    if name == "model.safetensors":
        data = (good / name).read_bytes()
    else:
        data = (ref_root / "model" / name).read_bytes()
    (d / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(d, device="cpu")


def test_missing_files_fail_clearly(ref_root, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "c").mkdir()
    with pytest.raises(UIO2ConfigError, match="does not exist"):
        load_model(tmp_path / "c")
    shutil.copy(ref_root / "model" / "config.json", tmp_path / "c")
    with pytest.raises(CheckpointError, match="no weights file"):
        load_model(tmp_path / "c")


def test_cli_exits_nonzero_on_bad_checkpoint(ref_root, ref_config, tmp_path, capsys):
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({**ref_config, "bogus_field": 1}))
    shutil.copy(ref_root / "model" / "pytorch_model.bin", d)
    rc = cli_main(["uio2-dump", "--model", str(d), "--preprocessed",
                   str(ref_root / "preprocessed.safetensors"), "--out", str(tmp_path / "o.safetensors")])
    assert rc != 0
    assert "bogus_field" in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()


# ---- the project's own format ---------------------------------------------------------------------

def test_project_format_round_trip(ref_root, batch, tmp_path):
    model = load_model(ref_root / "model", dtype="float32", device="cpu")
    meta = {"normalization": {"action_mean": [0.1, 0.2]}, "hash": "abc"}
    out = tmp_path / "policy"
    save_checkpoint(model, out, tokenizer=ref_root / "tokenizer.model", metadata={"old": True})
    save_checkpoint(model, out, tokenizer=ref_root / "tokenizer.model", metadata=meta)  # replaces
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]  # no temp leftovers
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.model",
                                                     "uio_robot.json"]
    assert read_metadata(out) == meta
    assert tokenizer_file(out).read_bytes() == (ref_root / "tokenizer.model").read_bytes()
    loaded = load_model(out, dtype="float32", device="cpu")
    with torch.no_grad():
        assert torch.equal(loaded(batch), model(batch))


def test_tiny_preset_round_trip_in_bfloat16(tmp_path):
    model = UIO2Model(preset("tiny", vocab_size=1536)).init_weights(3).to(torch.bfloat16)
    save_checkpoint(model, tmp_path / "tiny")
    loaded = load_model(tmp_path / "tiny", dtype="bfloat16", device="cpu")
    assert loaded.dtype == torch.bfloat16
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert pick_dtype("fp16") == torch.float16
    with pytest.raises(CheckpointError, match="unknown dtype"):
        pick_dtype("float8")


def test_cli_exits_nonzero_on_bad_tokenizer(ref_root, tmp_path, capsys):
    rc = cli_main(["uio2-dump", "--model", str(ref_root / "model"), "--tokenizer", str(ref_root / "raw.json"),
                   "--raw", str(ref_root), "--out", str(tmp_path / "o.safetensors")])
    assert rc != 0 and "not a SentencePiece model" in capsys.readouterr().err
