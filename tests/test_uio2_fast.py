"""The fast generation path computes the plain path's function: same greedy tokens on the reference
vectors, same constrained decoding and EOS handling, bucketed prompts reuse their buffers, the history
cache computes a frame once, the decode step has no host synchronisation, and bench writes its JSON."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from uio_robot.policies.uio2 import bench
from uio_robot.policies.uio2.checkpoint import load_model
from uio_robot.policies.uio2.fast import FastGenerator
from uio_robot.policies.uio2.generate import generate
from uio_robot.policies.uio2.history_cache import HistoryFeatureCache
from uio_robot.policies.uio2.model import to_batch
from uio_robot.policies.uio2.preprocess import preprocess_image_torch


@pytest.fixture(scope="module")
def reference(shared_dir):
    return shared_dir / "uio2_reference"


@pytest.fixture(scope="module")
def model(reference):
    return load_model(reference / "model", dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def batch(reference):
    arrays = load_file(str(reference / "preprocessed.safetensors"))
    return to_batch({k: v for k, v in arrays.items() if not k.startswith("targets/")})


@pytest.fixture(scope="module")
def fast(model):
    return FastGenerator(model, max_batch=2, max_new_tokens=12)


def _trim_text(batch: dict, n: int) -> dict:
    out = dict(batch)
    for k in ("inputs/text/tokens", "inputs/text/mask", "inputs/text/pos_ids"):
        out[k] = batch[k][:, :n]
    return out


def test_greedy_tokens_equal_reference_and_plain(fast, model, batch, reference):
    expected = load_file(str(reference / "expected.safetensors"))["generation/tokens"]
    out = fast.generate(batch, max_new_tokens=12, min_new_tokens=12)
    plain = generate(model, batch, max_new_tokens=12, min_new_tokens=12)
    assert out.tokens.tolist() == expected.tolist()
    assert torch.equal(out.tokens, plain.tokens) and torch.equal(out.lengths, plain.lengths)
    # from the plain path's encoder output as well
    assert torch.equal(fast.generate(encoded=model.encode(batch), max_new_tokens=12, min_new_tokens=12).tokens,
                       plain.tokens)


def test_encoder_output_matches_plain_on_valid_positions(fast, model, batch):
    plain = model.encode(batch)
    encoded = fast.encode(batch)
    n_text = batch["inputs/text/tokens"].shape[1]
    bucket = fast.bucketed_length(n_text)
    assert encoded.hidden.shape[1] == plain.hidden.shape[1] + bucket - n_text
    fast_rows = torch.cat([encoded.hidden[:, :n_text], encoded.hidden[:, bucket:]], 1)
    fast_mask = torch.cat([encoded.mask[:, :n_text], encoded.mask[:, bucket:]], 1)
    assert torch.equal(fast_mask, plain.mask) and encoded.mask[:, n_text:bucket].eq(0).all()
    valid = plain.mask.bool()
    scale = max(1.0, float(plain.hidden[valid].abs().max()))
    assert (fast_rows[valid] - plain.hidden[valid]).abs().max() <= 1e-4 * scale


def test_constrained_decoding_and_eos_match_plain(fast, model, batch):
    vocab = model.config.t5_config.vocab_size
    rows = torch.zeros(2, vocab, dtype=torch.bool)
    rows[0, 1], rows[1, 5] = True, True
    cases = [
        dict(allowed=[list(range(200, 1200))], max_new_tokens=8),
        dict(allowed=[[7], [8, 9], [10]], max_new_tokens=5),
        dict(allowed=[[5], [1]], max_new_tokens=6),  # both rows stop at EOS
        dict(allowed=[[1, 5]] * 3 + [[1]], max_new_tokens=6, min_new_tokens=3),
        dict(allowed=[rows], max_new_tokens=3),  # one row finishes early and is padded
    ]
    for case in cases:
        allowed, steps, min_new = case["allowed"], case["max_new_tokens"], case.get("min_new_tokens", 0)
        plain = generate(model, batch, max_new_tokens=steps, min_new_tokens=min_new,
                         allowed_tokens=lambda step, toks, a=allowed: a[min(step, len(a) - 1)])
        out = fast.generate(batch, allowed_tokens=allowed, max_new_tokens=steps, min_new_tokens=min_new)
        assert out.tokens.tolist() == plain.tokens.tolist(), case
        assert out.lengths.tolist() == plain.lengths.tolist(), case
    # a prepared mask [steps, B, V] gives the same as the list it came from
    mask = fast.allowed_mask([list(range(200, 1200))], 2, 8)
    assert mask.shape == (8, 2, vocab)
    assert torch.equal(fast.generate(batch, allowed_tokens=mask, max_new_tokens=8).tokens,
                       fast.generate(batch, allowed_tokens=[list(range(200, 1200))], max_new_tokens=8).tokens)


def test_bad_requests_fail_clearly(fast, batch):
    with pytest.raises(ValueError, match="no allowed token left at step 0"):
        fast.generate(batch, allowed_tokens=[[1]], max_new_tokens=2, min_new_tokens=2)
    with pytest.raises(TypeError, match="not a callable"):
        fast.generate(batch, allowed_tokens=lambda step, toks: [5], max_new_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        fast.generate(batch, max_new_tokens=13)
    with pytest.raises(ValueError, match="allowed ids must be in"):
        fast.generate(batch, allowed_tokens=[[10**6]], max_new_tokens=2)
    big = {k: torch.cat([v, v]) for k, v in batch.items()}
    with pytest.raises(ValueError, match="max_batch"):
        fast.generate(big, max_new_tokens=2)


def test_prompts_in_one_bucket_reuse_buffers(model, batch):
    gen = FastGenerator(model, max_batch=2, max_new_tokens=6, bucket=16)
    first = gen.generate(_trim_text(batch, 18), max_new_tokens=6, min_new_tokens=6)
    state = next(iter(gen.states.values()))
    buffers = state.k[0].data_ptr(), state.tokens.data_ptr(), state.hidden.data_ptr()
    second = gen.generate(_trim_text(batch, 22), max_new_tokens=6, min_new_tokens=6)
    assert gen.setups == 1 and len(gen.states) == 1
    assert buffers == (state.k[0].data_ptr(), state.tokens.data_ptr(), state.hidden.data_ptr())
    for n, out in ((18, first), (22, second)):
        plain = generate(model, _trim_text(batch, n), max_new_tokens=6, min_new_tokens=6)
        assert torch.equal(out.tokens, plain.tokens), n
    gen.generate(_trim_text(batch, 12), max_new_tokens=6)  # 12 tokens: the next bucket down
    assert gen.setups == 2


def test_decode_step_traces_as_one_graph(model, batch):
    """No host synchronisation or data-dependent Python in a step: torch.compile(fullgraph=True) would
    raise at a graph break. The compiled step must also compute what the eager one does."""
    gen = FastGenerator(model, max_batch=2, max_new_tokens=4)
    state = gen.prefill(batch)
    eager = gen.decode(state, max_new_tokens=4, min_new_tokens=4).tokens
    torch._dynamo.reset()
    compiled = torch.compile(lambda: gen._step(state), backend="eager", fullgraph=True)
    state.step_call.fn = compiled
    try:
        assert torch.equal(gen.decode(state, max_new_tokens=4, min_new_tokens=4).tokens, eager)
    finally:
        torch._dynamo.reset()


def test_history_cache_computes_each_frame_once(model, batch):
    cache = HistoryFeatureCache(model, capacity=3)
    patches, mask = batch["inputs/image_history/input"][0], batch["inputs/image_history/mask"][0]
    frames = [(patches[t], mask[t]) for t in range(2)]
    calls = []
    compute = cache.compute
    cache.compute = lambda p, m: calls.append(p.shape[0]) or compute(p, m)
    first = cache.features(["a", "b"], frames)
    again = cache.features(["b", "a"], [lambda: pytest.fail("a cached frame was preprocessed")] * 2)
    assert calls == [2] and (cache.hits, cache.misses) == (2, 2)
    assert torch.equal(again[0], first[1]) and torch.equal(again[1], first[0])
    # the same numbers as the model's own history embedder (ViT + perceiver + projection)
    x, latent_mask, rope = cache.embed([["a", "b"]], [frames])
    with torch.no_grad():
        ref = model.input_embedders["image_history"](
            batch["inputs/image_history/input"][:1], batch["inputs/image_history/mask"][:1],
            batch["inputs/image_history/pos_ids"][:1], model.input_embedders["image"].image_encoder)
    valid = ref[1].bool()
    assert torch.equal(latent_mask, ref[1]) and torch.equal(rope, ref[2])
    assert (x[valid] - ref[0][valid]).abs().max() <= 1e-4 * max(1.0, float(ref[0][valid].abs().max()))
    # LRU: capacity 3; embed() used "a" then "b", so two new frames evict "a"
    cache.features(["c", "d"], frames)
    assert list(cache.entries) == ["b", "c", "d"] and calls == [2, 2]


def test_history_from_raw_frames_and_in_generation(model, batch):
    gen = FastGenerator(model, max_batch=2, max_new_tokens=6)
    rng = np.random.default_rng(0)
    frames = [torch.from_numpy(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)) for _ in range(2)]
    block = gen.history_block([[10, 11], []], [frames, []])
    assert gen.history.misses == 2 and block[1][0].sum() == 2 * 32 and block[1][1].sum() == 0
    prepared = [preprocess_image_torch(f, 256)[:2] for f in frames]
    direct = gen.history.compute(torch.stack([p for p, _ in prepared]), torch.stack([m for _, m in prepared]))
    assert torch.equal(block[0][0, :64].reshape(2, 32, -1),
                       direct + model.input_embedders["image_history"].modality_embedding)
    # generation with the cached block equals generation with the same frames as batch patches
    with_patches = dict(batch)
    hist = torch.zeros_like(batch["inputs/image_history/input"])
    hist_mask = torch.zeros_like(batch["inputs/image_history/mask"])
    for t, (p, m) in enumerate(prepared):
        hist[0, t], hist_mask[0, t] = p, m
    with_patches["inputs/image_history/input"], with_patches["inputs/image_history/mask"] = hist, hist_mask
    plain = generate(model, with_patches, max_new_tokens=6, min_new_tokens=6)
    cached = gen.generate(batch, history=gen.history_block([[10, 11], []], [frames, []]), max_new_tokens=6,
                          min_new_tokens=6)
    assert gen.history.misses == 2 and torch.equal(cached.tokens, plain.tokens)


@pytest.mark.parametrize("plain", [False, True])
def test_bench_json_has_documented_keys(tmp_path, plain):
    path = tmp_path / "bench.json"
    argv = ["--preset", "tiny", "--batch", "1", "--iters", "2", "--warmup", "0", "--threads", "2",
            "--json", str(path)] + (["--plain"] if plain else [])
    assert bench.main(argv) == 0
    result = json.loads(path.read_text())
    assert result["preset"] == "tiny" and result["batch"] == 1 and result["dtype"] == "float32"
    assert result["path"] == ("plain" if plain else "fast") and result["device"].startswith("cpu")
    for key in ("action_step_ms", "answer32_ms", "preprocess_ms", "vision_ms", "encoder_ms"):
        p = result[key]
        assert 0 < p["p50"] <= p["p90"] <= p["p99"], key
    assert result["decode_token_ms"]["p50"] > 0 and result["decode_gbps"] > 0 and result["peak_mem_mb"] > 0
    assert result["tokens_per_s"] > 0
