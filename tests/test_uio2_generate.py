"""UIO2 generation: the KV cache matches recomputation, constraints hold, padding and batching do not
change results, EOS / min_new_tokens / sampling / the between-steps hook behave, other configs run."""

import pytest
import torch
from safetensors.numpy import load_file

from uio_robot.policies.uio2.bench import random_batch
from uio_robot.policies.uio2.checkpoint import load_model
from uio_robot.policies.uio2.config import preset
from uio_robot.policies.uio2.generate import generate
from uio_robot.policies.uio2.model import UIO2Model, to_batch


@pytest.fixture(scope="module")
def model(shared_dir):
    return load_model(shared_dir / "uio2_reference" / "model", dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def arrays(shared_dir):
    return load_file(str(shared_dir / "uio2_reference" / "preprocessed.safetensors"))


def _example(arrays, i: int) -> dict:
    """Example i alone: its text padding trimmed; history dropped when it has none."""
    n = int(arrays["inputs/text/mask"][i].sum())
    out = {k: v[i:i + 1] for k, v in arrays.items() if not k.startswith("targets/")}
    for k in ("inputs/text/tokens", "inputs/text/mask", "inputs/text/pos_ids"):
        out[k] = out[k][:, :n]
    if out["inputs/image_history/mask"].sum() == 0:
        out = {k: v for k, v in out.items() if not k.startswith("inputs/image_history/")}
    return to_batch(out)


def test_kv_cache_matches_recomputation(model, arrays):
    batch = to_batch(arrays)
    out = generate(model, batch, max_new_tokens=10, min_new_tokens=10, return_top_k=3)
    encoded = model.encode(batch)
    tokens = torch.zeros(2, 1, dtype=torch.long)
    with torch.no_grad():
        for step in range(10):
            positions = torch.arange(tokens.shape[1]).expand(2, -1)
            logits = model.logits(model.decode(tokens, positions, encoded)[:, -1])
            logits[:, 1] = float("-inf")
            torch.testing.assert_close(out.top_scores[:, step], logits.topk(3).values, atol=1e-4, rtol=0)
            tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], 1)
    assert torch.equal(out.tokens, tokens)


def test_batch_with_padding_equals_examples_alone(model, arrays):
    together = generate(model, to_batch(arrays), max_new_tokens=12, min_new_tokens=12).tokens
    for i in range(2):
        alone = generate(model, _example(arrays, i), max_new_tokens=12, min_new_tokens=12).tokens
        assert torch.equal(alone[0], together[i]), f"example {i}"


def test_constrained_decoding_only_emits_allowed_tokens(model, arrays):
    batch = to_batch(arrays)
    locations = list(range(200, 1200))
    out = generate(model, batch, max_new_tokens=8, allowed_tokens=lambda step, toks: locations)
    generated = out.tokens[:, 1:]
    assert generated.shape == (2, 8) and ((generated >= 200) & (generated < 1200)).all()
    per_step = [[7], [8, 9], [10]]
    out = generate(model, batch, max_new_tokens=5, allowed_tokens=per_step)
    assert out.tokens[:, 1].eq(7).all() and out.tokens[:, 2].ge(8).all() and out.tokens[:, 3:].eq(10).all()
    mask = torch.zeros(2, model.config.t5_config.vocab_size, dtype=torch.bool)
    mask[0, 11], mask[1, 12] = True, True
    out = generate(model, batch, max_new_tokens=2, allowed_tokens=lambda step, toks: mask)
    assert out.tokens[0, 1:].eq(11).all() and out.tokens[1, 1:].eq(12).all()
    with pytest.raises(ValueError, match="no allowed token"):
        generate(model, batch, max_new_tokens=2, min_new_tokens=2, allowed_tokens=[[1]])


def test_stops_at_eos_and_honours_min_new_tokens(model, arrays):
    batch = to_batch(arrays)
    out = generate(model, batch, max_new_tokens=6, allowed_tokens=[[5], [1]])
    assert out.tokens.tolist() == [[0, 5, 1]] * 2 and out.lengths.tolist() == [2, 2]
    out = generate(model, batch, max_new_tokens=6, min_new_tokens=3, allowed_tokens=[[1, 5]] * 3 + [[1]])
    assert out.tokens[:, 1:4].eq(5).all() and out.tokens[:, 4].eq(1).all() and out.tokens.shape[1] == 5
    # one row finishing early gets padding while the other continues
    rows = torch.zeros(2, model.config.t5_config.vocab_size, dtype=torch.bool)
    rows[0, 1], rows[1, 5] = True, True
    out = generate(model, batch, max_new_tokens=3, allowed_tokens=lambda step, toks: rows)
    assert out.tokens.tolist() == [[0, 1, 0, 0], [0, 5, 5, 5]] and out.lengths.tolist() == [1, 3]


def test_sampling_is_seeded_and_top_p_limits_choices(model, arrays):
    batch = to_batch(arrays)
    kwargs = dict(max_new_tokens=6, do_sample=True, temperature=1.5)
    a = generate(model, batch, generator=torch.Generator().manual_seed(1), **kwargs).tokens
    b = generate(model, batch, generator=torch.Generator().manual_seed(1), **kwargs).tokens
    assert torch.equal(a, b)
    greedy = generate(model, batch, max_new_tokens=6).tokens
    nucleus = generate(model, batch, max_new_tokens=6, do_sample=True, top_p=1e-6,
                       generator=torch.Generator().manual_seed(2)).tokens
    assert torch.equal(greedy, nucleus)


def test_between_steps_hook_runs_between_decode_steps(model, arrays):
    calls = []
    generate(model, to_batch(arrays), max_new_tokens=5, min_new_tokens=5, between_steps=calls.append)
    assert calls == [1, 2, 3, 4]


def test_other_configs_run():
    """Other widths, head counts, layer counts, frame slots and sparse cross-attention."""
    config = preset("tiny", vocab_size=640)
    t = config.t5_config
    t.emb_dim, t.num_heads, t.head_dim, t.mlp_dim = 96, 3, 32, 160
    t.num_encoder_layers, t.num_decoder_layers, t.decoder_xattention_internval = 1, 3, 2
    config.image_vit_cfg.num_layers = 2
    config.image_history_cfg.num_layers, config.image_history_cfg.xattention_index = 3, [0, 2]
    config.sequence_length["num_frames"] = 2
    model = UIO2Model(config).init_weights(1).eval()
    assert not model.decoder.layers_1.has_cross and model.decoder.layers_2.has_cross
    batch = random_batch(model, batch=2, prompt_len=9, frames_used=1)
    out = generate(model, batch, max_new_tokens=4, min_new_tokens=4, return_top_k=2)
    assert out.tokens.shape == (2, 5) and out.top_ids.shape == (2, 4, 2)
    encoded = model.encode(batch)
    assert encoded.hidden.shape == (2, 9 + 576 + 2 * 32, 96)
