"""UIO2 network configuration, read from and written to the reference `config.json` format.

The field names are the reference's so that a released checkpoint's config.json loads as is and a
saved config stays loadable by the reference code. Unknown fields are errors (a typo must not silently
fall back to a default); the audio / VQGAN sub-configs are accepted, kept verbatim and otherwise ignored,
because this network only reads text, images and image history and writes text.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class UIO2ConfigError(ValueError):
    """A config that cannot describe this network; the message names the field."""


ACTIVATIONS = ("silu", "gelu", "relu", "linear")


@dataclass
class T5Config:
    """The main encoder-decoder transformer (reference `t5_config`)."""

    vocab_size: int = 33280
    image_vocab_size: int = 16512
    image_patch_size: int = 16
    audio_vocab_size: int = 8320
    emb_dim: int = 1024
    num_heads: int = 16
    num_encoder_layers: int = 24
    num_decoder_layers: int = 24
    head_dim: int = 64
    mlp_dim: int = 2816
    mlp_activations: list[str] = field(default_factory=lambda: ["silu", "linear"])
    dropout_rate: float = 0.0
    dropout_broadcast_dims: list[int] = field(default_factory=lambda: [-2])
    logits_via_embedding: bool = True
    float32_attention_logits: bool = True
    decoder_xattention_internval: int = 1  # (sic) the reference's spelling
    qk_norm: bool = True
    dalle_attn_mask: bool = True
    dynamic_unk_mask: bool = True
    encoder_max_image_length: int = 576
    encoder_max_audio_length: int = 128
    encoder_max_text_length: int = 512
    decoder_max_image_length: int = 1024
    decoder_max_audio_length: int = 512
    decoder_max_text_length: int = 512
    text_pos_emb: str = "llama_rope"
    image_pos_emb: str = "llama_rope"
    audio_pos_emb: str = "llama_rope"
    image_history_pos_emb: str = "llama_rope"
    audio_history_pos_emb: str = "llama_rope"
    image_tokenizer_type: str = "vqgan"
    default_image_size: list[int] = field(default_factory=lambda: [256, 256])
    default_image_vit_size: list[int] = field(default_factory=lambda: [384, 384])
    default_image_history_vit_size: list[int] = field(default_factory=lambda: [256, 256])
    default_audio_size: list[int] = field(default_factory=lambda: [256, 128])
    default_audio_vit_size: list[int] = field(default_factory=lambda: [256, 128])
    default_audio_history_vit_size: list[int] = field(default_factory=lambda: [256, 128])
    image_vit_patch_size: int = 16
    audio_patch_size: int = 16
    audio_vit_patch_size: int = 16


@dataclass
class ViTConfig:
    """The CLIP-style image ViT shared by the image and image-history embedders (`image_vit_cfg`)."""

    patch_size: int = 16
    pos_patch_size: int = 16
    emb_dim: int = 768
    num_heads: int = 12
    num_layers: int = 11  # CLIP ViT-B/16 without its last block
    head_dim: int = 64
    mlp_dim: int = 3072
    mlp_activations: list[str] = field(default_factory=lambda: ["gelu"])
    dropout_rate: float = 0.0
    dropout_broadcast_dims: list[int] = field(default_factory=list)
    float32_attention_logits: bool = True
    default_input_size: list[int] = field(default_factory=lambda: [256, 256])
    num_pos: int = 197


@dataclass
class ResamplerConfig:
    """The perceiver resampler that turns each history frame into a few latents (`image_history_cfg`)."""

    resampler_type: str = "perceiver"
    max_frames: int = 8
    latents_size: int = 32
    emb_dim: int = 768
    num_heads: int = 12
    num_layers: int = 2
    xattention_index: list[int] = field(default_factory=lambda: [0, 1])
    head_dim: int = 64
    mlp_dim: int = 2048
    mlp_activations: list[str] = field(default_factory=lambda: ["gelu"])
    dropout_rate: float = 0.0
    dropout_broadcast_dims: list[int] = field(default_factory=lambda: [-2])
    droppath_rate: float = 0.0
    layer_drop: float = 0.0
    xattn_qk_norm: bool = True
    xattn_scaled_cosine: bool = False
    attn_qk_norm: bool = True
    attn_scaled_cosine: bool = False
    float32_attention_logits: bool = True
    clip_attn_logit: float | None = None


SEQUENCE_LENGTH_KEYS = (
    "is_training", "image_input_samples", "image_history_input_samples", "audio_input_samples",
    "audio_history_input_samples", "num_frames",
)
# Sub-configs of parts this network does not have; kept verbatim so a saved config round-trips.
IGNORED_SUBCONFIGS = ("audio_history_cfg", "image_vqgan", "audio_vqgan", "audio_vit_cfg")


@dataclass
class UIO2Config:
    t5_config: T5Config = field(default_factory=T5Config)
    image_vit_cfg: ViTConfig = field(default_factory=ViTConfig)
    image_history_cfg: ResamplerConfig = field(default_factory=ResamplerConfig)
    sequence_length: dict[str, Any] = field(default_factory=lambda: {
        "is_training": True, "image_input_samples": 576, "image_history_input_samples": 256,
        "audio_input_samples": 128, "audio_history_input_samples": 128, "num_frames": 4})
    freeze_vit: bool = True
    input_modalities: list[str] = field(
        default_factory=lambda: ["text", "image", "image_history", "audio", "audio_history"])
    target_modalities: list[str] = field(default_factory=lambda: ["text", "image", "audio"])
    use_image_vit: bool = True
    use_audio_vit: bool = True
    use_image_history_vit: bool = True
    use_audio_history_vit: bool = True
    ignored: dict[str, Any] = field(default_factory=dict)  # the IGNORED_SUBCONFIGS, verbatim

    # ---- derived sizes -------------------------------------------------------------------------
    @property
    def image_grid(self) -> tuple[int, int]:
        """Patch grid of the main image (24x24 for 384x384 with 16x16 patches)."""
        t = self.t5_config
        return (t.default_image_vit_size[0] // t.image_vit_patch_size,
                t.default_image_vit_size[1] // t.image_vit_patch_size)

    @property
    def history_grid(self) -> tuple[int, int]:
        t = self.t5_config
        return (t.default_image_history_vit_size[0] // t.image_vit_patch_size,
                t.default_image_history_vit_size[1] // t.image_vit_patch_size)

    @property
    def num_frames(self) -> int:
        return int(self.sequence_length.get("num_frames", 4))

    # ---- (de)serialization ---------------------------------------------------------------------
    @staticmethod
    def from_dict(data: dict[str, Any]) -> UIO2Config:
        if not isinstance(data, dict):
            raise UIO2ConfigError(f"UIO2 config: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(UIO2Config)} - {"ignored"}
        unknown = sorted(set(data) - known - set(IGNORED_SUBCONFIGS))
        if unknown:
            raise UIO2ConfigError(f"UIO2 config: unknown field(s) {unknown}")
        if "t5_config" not in data:
            raise UIO2ConfigError("UIO2 config: missing field 't5_config'")
        kwargs: dict[str, Any] = {}
        for name, cls in (("t5_config", T5Config), ("image_vit_cfg", ViTConfig),
                          ("image_history_cfg", ResamplerConfig)):
            if name in data:
                kwargs[name] = _sub_config(cls, data[name], name)
        for name in known - set(kwargs):
            if name in data:
                kwargs[name] = data[name]
        kwargs["ignored"] = {k: data[k] for k in IGNORED_SUBCONFIGS if k in data}
        config = UIO2Config(**kwargs)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "ignored"}
        out = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in out.items()}
        out.update(self.ignored)
        return json.loads(json.dumps(out))  # deep copy with lists, as JSON will hold it

    @staticmethod
    def load(path: str | Path) -> UIO2Config:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UIO2ConfigError(f"UIO2 config: {path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise UIO2ConfigError(f"UIO2 config: {path} is not valid JSON ({exc})") from None
        try:
            return UIO2Config.from_dict(data)
        except UIO2ConfigError as exc:
            raise UIO2ConfigError(f"{exc} (in {path})") from None

    # ---- checks --------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise UIO2ConfigError naming the first field this implementation cannot honour."""
        t, v, r = self.t5_config, self.image_vit_cfg, self.image_history_cfg
        unknown = sorted(set(self.sequence_length) - set(SEQUENCE_LENGTH_KEYS))
        if unknown:
            raise UIO2ConfigError(f"UIO2 config: unknown sequence_length field(s) {unknown}")
        for prefix, cfg in (("t5_config", t), ("image_vit_cfg", v), ("image_history_cfg", r)):
            _check(cfg.emb_dim == cfg.num_heads * cfg.head_dim, f"{prefix}.emb_dim",
                   f"must equal num_heads * head_dim ({cfg.num_heads} * {cfg.head_dim}), got {cfg.emb_dim}")
            for name in ("emb_dim", "num_heads", "head_dim", "mlp_dim"):
                _check(getattr(cfg, name) > 0, f"{prefix}.{name}", "must be positive")
            bad = [a for a in cfg.mlp_activations if a not in ACTIVATIONS]
            _check(not bad and len(cfg.mlp_activations) >= 1, f"{prefix}.mlp_activations",
                   f"entries must be among {list(ACTIVATIONS)}, got {cfg.mlp_activations}")
        _check(t.head_dim % 4 == 0, "t5_config.head_dim", "must be a multiple of 4 (2D rotary)")
        _check(t.num_encoder_layers >= 1, "t5_config.num_encoder_layers", "must be >= 1")
        _check(t.num_decoder_layers >= 1, "t5_config.num_decoder_layers", "must be >= 1")
        _check(t.vocab_size > 2, "t5_config.vocab_size", "must be > 2")
        _check(t.decoder_xattention_internval >= 1, "t5_config.decoder_xattention_internval", "must be >= 1")
        for name in ("text_pos_emb", "image_pos_emb", "image_history_pos_emb"):
            _check(getattr(t, name) == "llama_rope", f"t5_config.{name}",
                   f"only 'llama_rope' is supported, got {getattr(t, name)!r}")
        _check(v.num_layers >= 2, "image_vit_cfg.num_layers", "must be >= 2 (the second block is used)")
        side = math.isqrt(v.num_pos - 1)
        _check(side * side == v.num_pos - 1, "image_vit_cfg.num_pos", "must be 1 + a square grid")
        _check(v.patch_size == t.image_vit_patch_size, "image_vit_cfg.patch_size",
               f"must equal t5_config.image_vit_patch_size ({t.image_vit_patch_size})")
        _check(r.resampler_type == "perceiver", "image_history_cfg.resampler_type",
               f"only 'perceiver' is supported, got {r.resampler_type!r}")
        _check(r.latents_size >= 1 and r.num_layers >= 1, "image_history_cfg", "needs latents and layers")
        _check(1 <= self.num_frames <= r.max_frames, "sequence_length.num_frames",
               f"must be in [1, image_history_cfg.max_frames={r.max_frames}], got {self.num_frames}")
        _check(self.use_image_vit and self.use_image_history_vit, "use_image_vit",
               "the image and image-history embedders must use the ViT")
        for name, size in (("default_image_vit_size", t.default_image_vit_size),
                           ("default_image_history_vit_size", t.default_image_history_vit_size)):
            _check(len(size) == 2 and all(s % t.image_vit_patch_size == 0 for s in size),
                   f"t5_config.{name}", f"must be two multiples of the patch size, got {size}")


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise UIO2ConfigError(f"UIO2 config: {name} {message}")


def _sub_config(cls: type, data: Any, name: str) -> Any:
    if not isinstance(data, dict):
        raise UIO2ConfigError(f"UIO2 config: {name} must be an object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UIO2ConfigError(f"UIO2 config: unknown field(s) {[f'{name}.{k}' for k in unknown]}")
    return cls(**data)


def resized_config(config: UIO2Config, size: int) -> UIO2Config:
    """`config` with a `size` x `size` main image input (history frames keep their size): the one place that
    says which fields an image size sets."""
    patch = config.t5_config.image_vit_patch_size
    if size <= 0 or size % patch:
        raise ValueError(f"image size {size} must be a positive multiple of the patch size {patch}")
    new = copy.deepcopy(config)
    patches = (size // patch) ** 2
    new.t5_config.default_image_vit_size = [size, size]
    new.t5_config.encoder_max_image_length = patches
    new.image_vit_cfg.num_pos = patches + 1
    new.sequence_length["image_input_samples"] = patches
    new.validate()
    return new


def round_vocab(num_pieces: int) -> int:
    """Text vocabulary for a SentencePiece model of N pieces: N + 1225 UIO2 pieces, rounded up to 128."""
    return -(-(num_pieces + 1225) // 128) * 128


def preset(name: str, vocab_size: int | None = None) -> UIO2Config:
    """`tiny` (CPU-friendly), `large`, `xl`, `xxl` (the released UIO2 sizes)."""
    name = name.lower()
    if name == "tiny":
        config = UIO2Config(
            t5_config=T5Config(emb_dim=256, num_heads=4, head_dim=64, mlp_dim=1024,
                               num_encoder_layers=4, num_decoder_layers=4),
            image_vit_cfg=ViTConfig(emb_dim=192, num_heads=3, head_dim=64, mlp_dim=768, num_layers=4),
            image_history_cfg=ResamplerConfig(emb_dim=128, num_heads=2, head_dim=64, mlp_dim=256),
            input_modalities=["text", "image", "image_history"], target_modalities=["text"],
            use_audio_vit=False, use_audio_history_vit=False,
        )
    elif name == "large":
        config = UIO2Config()
    elif name == "xl":
        config = UIO2Config(
            t5_config=T5Config(emb_dim=2048, num_heads=16, head_dim=128, mlp_dim=5120),
            image_history_cfg=ResamplerConfig(emb_dim=1024, num_heads=16, head_dim=64, mlp_dim=4096))
    elif name == "xxl":
        config = UIO2Config(
            t5_config=T5Config(emb_dim=3072, num_heads=24, head_dim=128, mlp_dim=8192),
            image_history_cfg=ResamplerConfig(
                emb_dim=1024, num_heads=16, head_dim=64, mlp_dim=4096, xattn_qk_norm=False,
                xattn_scaled_cosine=True, attn_qk_norm=False, attn_scaled_cosine=True))
    else:
        raise UIO2ConfigError(f"unknown UIO2 preset {name!r}; choose tiny, large, xl or xxl")
    if vocab_size is not None:
        config.t5_config.vocab_size = int(vocab_size)
    config.validate()
    return config
