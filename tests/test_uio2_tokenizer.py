"""UIO2 tokenizer: reference ids, special-token layout, location bins, decode, bad files, training."""

import json

import numpy as np
import pytest

from uio_robot.policies.uio2.tokenizer import TokenizerError, UIO2Tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def ref_dir(shared_dir):
    return shared_dir / "uio2_reference"


@pytest.fixture(scope="module")
def tok(ref_dir):
    return UIO2Tokenizer(ref_dir / "tokenizer.model")


def test_reference_token_ids(tok, ref_dir):
    raw = json.loads((ref_dir / "raw.json").read_text())
    for ex in raw["examples"]:
        ref = ex["reference_token_ids"]
        assert tok.encode("[Text] [S] " + ex["text_inputs"]) == ref["text_inputs_with_prefix"]
        assert tok.encode(ex["text_targets"]) == ref["text_targets"]


def test_special_token_layout(tok):
    n = tok.n_pieces
    assert n == 200 and tok.vocab_size == 1425 and tok.model_vocab_size == 1536
    assert [tok.id_to_piece(i) for i in (0, 1, 2)] == ["<s>", "</s>", "<unk>"]
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 0, 1, 2)
    assert tok.id_to_piece(n) == "\u2581<extra_id_1199>"
    assert tok.id_to_piece(n + 999) == "\u2581<extra_id_200>"
    assert tok.id_to_piece(n + 1000) == "\u2581<extra_id_199>"
    assert tok.id_to_piece(n + 1199) == "\u2581<extra_id_0>"
    assert tok.sentinel_token(0) == n + 1199 and tok.sentinel_token(199) == n + 1000
    for i in range(1, 9):
        assert tok.history_token(i) == n + 1200 + 2 * (i - 1)
        assert tok.id_to_piece(n + 1201 + 2 * (i - 1)) == f"\u2581<audio_history_{i}>"
        assert tok.encode(f"<image_history_{i}>") == [tok.history_token(i)]
    assert tok.image_input_id == n + 1216 and tok.audio_input_id == n + 1217
    assert tok.encode("<image_input>") == [n + 1216]
    prefixes = ["[Text] [S]", "[Text] [R]", "[Text] [X]", "[Image] [S]", "[Image] [R]", "[Audio] [S]", "[Audio] [R]"]
    for k, prefix in enumerate(prefixes):
        assert tok.prefix_id(prefix) == n + 1218 + k
        assert tok.encode(prefix) == [n + 1218 + k], prefix  # one token each
    with pytest.raises(ValueError, match="unknown task prefix"):
        tok.prefix_id("[Video] [S]")
    with pytest.raises(ValueError, match="history index"):
        tok.history_token(9)


def test_location_tokens_and_values(tok):
    n = tok.n_pieces
    ids = tok.location_token_ids()
    assert ids.tolist() == list(range(n, n + 1000))
    assert all(tok.is_location(i) for i in ids) and not tok.is_location(n - 1) and not tok.is_location(n + 1000)
    # bin b is <extra_id_{200+b}>
    assert tok.id_to_piece(tok.location_token(0)) == "\u2581<extra_id_200>"
    assert tok.id_to_piece(tok.location_token(999)) == "\u2581<extra_id_1199>"
    assert tok.encode("<extra_id_611>") == [tok.location_token(411)]
    # id N + x is value 1 - x/999; a value v is bin int(v * 999)
    assert tok.value_to_token(0.0) == n + 999 and tok.value_to_token(1.0) == n
    assert tok.value_to_token(0.3) == tok.location_token(299)
    for x in (0, 1, 500, 998, 999):
        assert tok.token_to_value(n + x) == pytest.approx(1 - x / 999, abs=1e-12)
    bins = np.arange(1000)
    tokens = tok.values_to_tokens(bins / 999)
    assert [tok.location_bin(t) for t in tokens] == bins.tolist()
    np.testing.assert_allclose(tok.tokens_to_values(tokens), bins / 999)
    for bad in (-0.01, 1.01, float("nan")):
        with pytest.raises(ValueError):
            tok.value_to_token(bad)
    with pytest.raises(ValueError, match="not location tokens"):
        tok.token_to_value(5)


def test_decode(tok):
    text = "step pick from <extra_id_512> <extra_id_340> and place it"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode(ids + [tok.eos_id] + tok.encode("the bowl")) == text  # stops at EOS
    assert tok.decode([tok.bos_id] + ids) == text  # BOS/PAD decodes to nothing
    unk_text = tok.decode([tok.unk_id])
    assert unk_text.strip() and tok.decode([tok.vocab_size, 33279]) == tok.decode([tok.unk_id, tok.unk_id])


def test_bad_tokenizer_files(tmp_path, ref_dir):
    cases = {
        "garbage.model": bytes(range(256)) * 8,
        "empty.model": b"",
        "image.model": (ref_dir / "raw_image.png").read_bytes(),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(TokenizerError, match=name):
            UIO2Tokenizer(path)
    with pytest.raises(TokenizerError, match="missing.model"):
        UIO2Tokenizer(tmp_path / "missing.model")


def test_train_tokenizer_deterministic_and_usable(tmp_path):
    texts = [
        "pick the red block and place it into the bowl",
        "push the green cube to the left of the table",
        "open the top drawer slowly",
        "stack the blue block on the yellow block",
        "what color is the block on the table?",
    ] * 10
    a = train_tokenizer(texts, tmp_path / "a" / "tok.model", vocab_size=300)
    b = train_tokenizer(texts, tmp_path / "b" / "tok.model", vocab_size=300)
    assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in a.parent.iterdir()) == ["tok.model"]  # no temp file left behind
    tok = UIO2Tokenizer(a)
    assert tok.n_pieces == 300 and tok.vocab_size == 1525
    prompt = "[Text] [S] <image_history_1> stack the red cube <extra_id_700> é"
    ids = tok.encode(prompt)
    assert ids[0] == tok.prefix_id("[Text] [S]") and ids[1] == tok.history_token(1)
    assert tok.location_token(500) in ids
    assert tok.decode(ids) == prompt  # byte fallback keeps unseen characters
    with pytest.raises(TokenizerError, match="no non-empty"):
        train_tokenizer(["", "  "], tmp_path / "c.model", vocab_size=300)
