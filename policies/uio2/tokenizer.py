"""The UIO2 text vocabulary: a SentencePiece model plus the UIO2 special-token layout.

UIO2 checkpoints expect token ids laid out in a fixed way on top of the SentencePiece model (N pieces):
bos=0 / eos=1 / unk=2, then 1200 `<extra_id_K>` pieces in reverse order (1000 of them are the location /
value bins), 16 history pieces, the image/audio input pieces and seven one-token task prefixes. We build
that vocabulary by editing the model proto and loading the edited proto, so encoding is plain
SentencePiece encoding and matches the reference tokenizer id for id.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import sentencepiece as spm

from uio_robot.common.atomic import atomic_write_bytes

NUM_EXTRA_IDS = 1200
NUM_SENTINELS = 200  # <extra_id_0..199>: T5 sentinels; 200..1199 are the location bins
NUM_LOCATION_BINS = 1000
NUM_HISTORY = 8
TASK_PREFIXES = (
    "[Text] [S]",
    "[Text] [R]",
    "[Text] [X]",
    "[Image] [S]",
    "[Image] [R]",
    "[Audio] [S]",
    "[Audio] [R]",
)
NUM_SPECIAL = NUM_EXTRA_IDS + 2 * NUM_HISTORY + 2 + len(TASK_PREFIXES)  # 1225
SPACE = "\u2581"  # SentencePiece's visible space mark
VOCAB_MULTIPLE = 128


class TokenizerError(ValueError):
    """A tokenizer file that cannot be used (missing, not a SentencePiece model, unexpected layout)."""


def _model_pb2():
    """The ModelProto bindings shipped with sentencepiece; they need the protobuf runtime."""
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as err:  # protobuf missing or too old for this sentencepiece's generated code
        raise TokenizerError(
            f"editing a SentencePiece model needs a protobuf runtime that matches sentencepiece "
            f"{spm.__version__}: {err}"
        ) from err
    return sentencepiece_model_pb2


def _special_pieces() -> list[str]:
    """The pieces appended after the N model pieces, in id order (without the leading space mark)."""
    pieces = [f"<extra_id_{k}>" for k in reversed(range(NUM_EXTRA_IDS))]
    for i in range(1, NUM_HISTORY + 1):
        pieces += [f"<image_history_{i}>", f"<audio_history_{i}>"]
    pieces += ["<image_input>", "<audio_input>"]
    pieces += list(TASK_PREFIXES)
    return pieces


def _build_uio2_proto(raw: bytes, path: Path) -> tuple[bytes, int]:
    """Return (serialized UIO2 model proto, N) built from the original model file's bytes."""
    pb2 = _model_pb2()
    model = pb2.ModelProto()
    try:
        model.ParseFromString(raw)
    except Exception as err:  # protobuf's DecodeError and friends
        raise TokenizerError(f"{path}: not a SentencePiece model file ({err})") from err
    piece_type = pb2.ModelProto.SentencePiece
    n = len(model.pieces)
    if n < 3:
        raise TokenizerError(f"{path}: not a SentencePiece model file (it has {n} pieces)")
    types = [model.pieces[i].type for i in range(3)]
    if types != [piece_type.UNKNOWN, piece_type.CONTROL, piece_type.CONTROL]:
        names = [model.pieces[i].piece for i in range(3)]
        raise TokenizerError(
            f"{path}: the first three pieces must be unk, bos, eos (LLaMA layout); found {names}"
        )
    unk, bos, eos = (pb2.ModelProto.SentencePiece() for _ in range(3))
    unk.CopyFrom(model.pieces[0])
    bos.CopyFrom(model.pieces[1])
    eos.CopyFrom(model.pieces[2])
    for i, piece in enumerate((bos, eos, unk)):
        model.pieces[i].CopyFrom(piece)
    model.trainer_spec.bos_id, model.trainer_spec.eos_id, model.trainer_spec.unk_id = 0, 1, 2
    model.trainer_spec.pad_id = -1
    for text in _special_pieces():
        model.pieces.add(piece=SPACE + text.replace(" ", SPACE), score=0.0, type=piece_type.USER_DEFINED)
    return model.SerializeToString(), n


class UIO2Tokenizer:
    """SentencePiece encoding/decoding with the UIO2 id layout and location-token helpers."""

    pad_id = 0
    bos_id = 0
    eos_id = 1
    unk_id = 2

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        try:
            raw = self.path.read_bytes()
        except OSError as err:
            raise TokenizerError(f"cannot read tokenizer file {self.path}: {err}") from err
        proto, self.n_pieces = _build_uio2_proto(raw, self.path)
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=proto)
        except (RuntimeError, OSError) as err:
            raise TokenizerError(f"{self.path}: not a usable SentencePiece model ({err})") from err
        self.vocab_size = self.n_pieces + NUM_SPECIAL
        if self._sp.get_piece_size() != self.vocab_size or self._sp.unk_id() != self.unk_id:
            raise TokenizerError(f"{self.path}: the UIO2 vocabulary could not be built from this model")
        n = self.n_pieces
        self._location_first = n  # bin 999
        self._history_first = n + NUM_EXTRA_IDS
        self.image_input_id = n + NUM_EXTRA_IDS + 2 * NUM_HISTORY
        self.audio_input_id = self.image_input_id + 1
        self._prefix_ids = {p: self.image_input_id + 2 + i for i, p in enumerate(TASK_PREFIXES)}

    @property
    def model_vocab_size(self) -> int:
        """Rows of the model's text embedding table: vocab_size rounded up to a multiple of 128."""
        return math.ceil(self.vocab_size / VOCAB_MULTIPLE) * VOCAB_MULTIPLE

    def encode(self, text: str) -> list[int]:
        """Plain SentencePiece ids; no BOS or EOS is added."""
        return list(self._sp.encode(text, out_type=int))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids` up to the first EOS; ids outside the tokenizer's range read as unk."""
        clean: list[int] = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            clean.append(i if 0 <= i < self.vocab_size else self.unk_id)
        return self._sp.decode(clean)

    def id_to_piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(int(token_id))

    # -- special tokens ---------------------------------------------------------------------------

    def sentinel_token(self, k: int) -> int:
        """Id of the T5 sentinel `<extra_id_k>`, k in 0..199."""
        if not 0 <= k < NUM_SENTINELS:
            raise ValueError(f"sentinel index must be in 0..{NUM_SENTINELS - 1}, got {k}")
        return self.n_pieces + NUM_EXTRA_IDS - 1 - k

    def history_token(self, i: int) -> int:
        """Id of `<image_history_i>`, i in 1..8."""
        if not 1 <= i <= NUM_HISTORY:
            raise ValueError(f"history index must be in 1..{NUM_HISTORY}, got {i}")
        return self._history_first + 2 * (i - 1)

    def prefix_id(self, prefix: str) -> int:
        """Id of a one-token task prefix such as "[Text] [S]"."""
        try:
            return self._prefix_ids[prefix.strip()]
        except KeyError:
            raise ValueError(f"unknown task prefix {prefix!r}; known: {list(TASK_PREFIXES)}") from None

    # -- location / value bins --------------------------------------------------------------------
    # Bin b is `<extra_id_{200+b}>`, id N + 999 - b; a value v in [0, 1] is bin int(v * 999).

    def location_token(self, bin_index: int) -> int:
        if not 0 <= bin_index < NUM_LOCATION_BINS:
            raise ValueError(f"location bin must be in 0..{NUM_LOCATION_BINS - 1}, got {bin_index}")
        return self._location_first + NUM_LOCATION_BINS - 1 - int(bin_index)

    def is_location(self, token_id: int) -> bool:
        return self._location_first <= int(token_id) < self._location_first + NUM_LOCATION_BINS

    def location_bin(self, token_id: int) -> int:
        if not self.is_location(token_id):
            raise ValueError(f"token {token_id} is not a location token")
        return self._location_first + NUM_LOCATION_BINS - 1 - int(token_id)

    def location_token_ids(self) -> np.ndarray:
        """All 1000 location ids (ascending), e.g. the allowed set for constrained action decoding."""
        return np.arange(self._location_first, self._location_first + NUM_LOCATION_BINS, dtype=np.int64)

    def values_to_tokens(self, values: np.ndarray | Sequence[float]) -> np.ndarray:
        """Vectorized value -> location id; values must be finite and within [0, 1]."""
        v = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"values must be finite, got {v[~np.isfinite(v)][:5].tolist()}")
        if np.any((v < 0.0) | (v > 1.0)):
            raise ValueError(f"values must lie in [0, 1], got min {v.min()} max {v.max()}")
        # int(v * 999), with a nudge so that exact bin values b/999 land back on bin b despite rounding.
        bins = np.floor(v * (NUM_LOCATION_BINS - 1) + 1e-9).astype(np.int64)
        return self._location_first + NUM_LOCATION_BINS - 1 - bins

    def tokens_to_values(self, token_ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Vectorized location id -> value b/999 (float64)."""
        ids = np.asarray(token_ids, dtype=np.int64)
        bad = (ids < self._location_first) | (ids >= self._location_first + NUM_LOCATION_BINS)
        if np.any(bad):
            raise ValueError(f"not location tokens: {ids[bad][:5].tolist()}")
        return (self._location_first + NUM_LOCATION_BINS - 1 - ids) / (NUM_LOCATION_BINS - 1)

    def value_to_token(self, value: float) -> int:
        return int(self.values_to_tokens([value])[0])

    def token_to_value(self, token_id: int) -> float:
        return float(self.tokens_to_values([token_id])[0])


def train_tokenizer(
    texts: Iterable[str],
    out_path: str | os.PathLike[str],
    vocab_size: int,
    model_type: str = "bpe",
    byte_fallback: bool = True,
) -> Path:
    """Train a small LLaMA-layout SentencePiece model (unk 0, bos 1, eos 2) and write it atomically.

    Training is single-threaded over the texts in the given order, so the same texts give the same bytes.
    """
    out_path = Path(out_path)
    sentences = [t for t in texts if t and t.strip()]
    if not sentences:
        raise TokenizerError("train_tokenizer: no non-empty training texts")
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=buffer,
            vocab_size=vocab_size,
            model_type=model_type,
            byte_fallback=byte_fallback,
            character_coverage=1.0,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,
            num_threads=1,
            shuffle_input_sentence=False,
            input_sentence_size=0,
            minloglevel=2,
        )
    except RuntimeError as err:
        raise TokenizerError(f"train_tokenizer: SentencePiece training failed: {err}") from err
    atomic_write_bytes(out_path, buffer.getvalue())
    return out_path
