"""The training recipe (a structured config with command-line overrides) and the small model it builds.

`uio-robot train data.dir=DIR out_dir=OUT train.steps=2000` overrides any field by its dotted path
(OmegaConf dotlist, the syntax Hydra uses); `--config FILE.yaml` loads a saved recipe first. The
defaults are the recipe of the shipped default model.

The `small` model is the UIO2 network at sizes that train on a 2-core CPU (in hours, not minutes: see
policies/assets/default/README.md) and act in tens of milliseconds: a 128x128 image input (8x8
patches), 64 px history frames, d_model 256, and a small SentencePiece vocabulary trained on the task
instructions and VQA texts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from uio_robot.policies.uio2.config import (
    ResamplerConfig,
    T5Config,
    UIO2Config,
    ViTConfig,
    preset,
    resized_config,
    round_vocab,
)


@dataclass
class ModelRecipe:
    size: str = "small"  # small | tiny | large | xl | xxl (ignored when init is set)
    init: str | None = None  # a checkpoint directory to fine-tune instead of training from scratch
    tokenizer_pieces: int = 512  # SentencePiece pieces of a tokenizer trained from scratch (259 are bytes)
    image_size: int = 128  # main image input (small size only), multiple of 16
    init_image_size: int = 0  # with init: fine-tune at this main image size (ViT positions resized); 0 = keep
    history_size: int = 64  # history frame input (small size only)
    emb_dim: int = 256
    encoder_layers: int = 3
    decoder_layers: int = 2
    mlp_dim: int = 768
    vit_dim: int = 192
    vit_layers: int = 3


@dataclass
class DataRecipe:
    dir: str = "data/demos"
    more_dirs: list[str] = field(default_factory=list)  # further recordings read with `dir` (same action layout)
    tasks: list[str] = field(default_factory=lambda: ["Reach"])  # empty: every task in the dataset
    camera: str = "image"
    chunk: int = 4
    history: int = 0
    history_stride: int = 2
    state_dims: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])  # grip xyz, yaw, opening
    vqa_fraction: float = 0.35
    # VQA kinds counted this many times in the mix (others once): grounding, which control needs, by default
    kind_repeat: dict[str, int] = field(default_factory=lambda: {"where": 3})
    vqa_kinds: list[str] = field(default_factory=list)  # train on these VQA kinds only ([] = all), e.g. [where]
    stats_mode: str = "quantile"
    val_episodes: int = 10  # the last episodes (by seed) held out for the validation loss


@dataclass
class OptimRecipe:
    steps: int = 4000
    batch_size: int = 16
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup: int = 150
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    location_sigma: float = 15.0  # soft targets for location tokens: Gaussian over bins (0 = one-hot)
    seed: int = 0
    log_every: int = 25
    eval_every: int = 200
    save_every: int = 200
    resume: bool = True
    threads: int = 1  # torch CPU threads (0 = torch's default); 1 is fastest on a busy 2-core machine
    device: str = "auto"
    workers: int = 0  # data-loader processes building batches (0 = in the training process); use >0 on a GPU
    max_minutes: float = 0.0  # stop and save after this long in this process (a resume starts afresh; 0 = no limit)
    # `uio-robot train`: stop and save at the first validation whose held-out "where" error is at most this many
    # location bins (0 = off). Why: a grounding stage breaks through after a number of steps that varies
    # several-fold between seeds, so a fixed step count either wastes time or stops before it grounds.
    stop_where_bins: float = 0.0
    # bf16: forward and backward under bfloat16 autocast (weights, optimizer and loss stay float32); 1.5-1.8x
    # faster on an AMD EPYC with AVX-512 BF16, about even on an Intel Xeon with AMX (measured, 2 cores), slower on
    # CPUs without bf16 instructions
    precision: str = "fp32"


@dataclass
class Recipe:
    out_dir: str = "runs/default"
    model: ModelRecipe = field(default_factory=ModelRecipe)
    data: DataRecipe = field(default_factory=DataRecipe)
    train: OptimRecipe = field(default_factory=OptimRecipe)


PRECISIONS = ("fp32", "bf16")
VQA_KINDS = ("colour", "shape", "count", "exists", "left_right", "front_behind", "where")  # envs/vqa.py's kinds


class RecipeError(ValueError):
    """A recipe field with a value training cannot use; the message names the field."""


def load_recipe(overrides: list[str] | None = None, config_file: str | Path | None = None) -> Recipe:
    """The default recipe, then `config_file` (YAML), then dotted overrides; validated."""
    base = OmegaConf.structured(Recipe)
    try:
        if config_file is not None:
            base = OmegaConf.merge(base, OmegaConf.load(config_file))
        bad = [o for o in overrides or [] if "=" not in o]
        if bad:
            raise RecipeError(f"overrides must look like key=value, got {bad}")
        cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides or [])))
    except RecipeError:
        raise
    except Exception as exc:  # omegaconf's errors name the key; keep its message
        raise RecipeError(f"recipe: {exc}") from None
    recipe: Recipe = OmegaConf.to_object(cfg)
    validate(recipe)
    return recipe


def to_dict(recipe: Recipe) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(recipe))


def validate(r: Recipe) -> None:
    checks = [
        (r.data.chunk >= 1, "data.chunk", "must be >= 1"),
        (r.data.history >= 0 and r.data.history_stride >= 1, "data.history", "needs history >= 0, stride >= 1"),
        (0.0 <= r.data.vqa_fraction < 1.0, "data.vqa_fraction", "must be in [0, 1)"),
        (set(r.data.kind_repeat) <= set(VQA_KINDS), "data.kind_repeat", f"keys must be among {VQA_KINDS}"),
        (all(n >= 1 for n in r.data.kind_repeat.values()), "data.kind_repeat", "counts must be >= 1"),
        (set(r.data.vqa_kinds) <= set(VQA_KINDS), "data.vqa_kinds", f"must be among {VQA_KINDS}"),
        (r.data.stats_mode in ("quantile", "minmax"), "data.stats_mode", "must be quantile or minmax"),
        (r.model.image_size % 16 == 0 and r.model.history_size % 16 == 0, "model.image_size",
         "image sizes must be multiples of 16"),
        (r.model.init_image_size >= 0 and r.model.init_image_size % 16 == 0, "model.init_image_size",
         "must be 0 (keep the checkpoint's) or a positive multiple of 16"),
        (not r.model.init_image_size or bool(r.model.init), "model.init_image_size", "needs model.init"),
        (r.model.tokenizer_pieces >= 300, "model.tokenizer_pieces", "must be >= 300 (byte fallback needs 259)"),
    ]
    for ok, name, message in checks:
        if not ok:
            raise RecipeError(f"recipe: {name} {message}")
    validate_optim(r.train)


def validate_optim(t: OptimRecipe) -> None:
    """The `train.*` checks, shared by `uio-robot train` and `train-vima` (both use OptimRecipe)."""
    checks = [
        (t.steps >= 1 and t.batch_size >= 1, "train.steps", "steps and batch_size must be >= 1"),
        (t.lr > 0 and 0 <= t.min_lr_ratio <= 1, "train.lr", "lr > 0, min_lr_ratio in [0, 1]"),
        (t.warmup >= 0 and t.grad_clip > 0, "train.warmup", "warmup >= 0, grad_clip > 0"),
        (t.location_sigma >= 0, "train.location_sigma", "must be >= 0"),
        (t.workers >= 0 and t.max_minutes >= 0, "train.workers", "workers and max_minutes must be >= 0"),
        (t.stop_where_bins >= 0, "train.stop_where_bins", f"must be >= 0 (0 = off), got {t.stop_where_bins}"),
        (min(t.log_every, t.eval_every, t.save_every) >= 1, "train.save_every", "log/eval/save intervals must be >= 1"),
        (t.precision in PRECISIONS, "train.precision", f"must be one of {PRECISIONS}, got {t.precision!r}"),
    ]
    for ok, name, message in checks:
        if not ok:
            raise RecipeError(f"recipe: {name} {message}")


def small_config(m: ModelRecipe, vocab_size: int, num_frames: int) -> UIO2Config:
    """The shipped model's network: UIO2 layout, CPU sizes, a 128 px image input."""
    config = UIO2Config(
        t5_config=T5Config(
            vocab_size=vocab_size, emb_dim=m.emb_dim, num_heads=m.emb_dim // 64, head_dim=64, mlp_dim=m.mlp_dim,
            num_encoder_layers=m.encoder_layers, num_decoder_layers=m.decoder_layers,
            default_image_history_vit_size=[m.history_size, m.history_size],
            encoder_max_text_length=128, decoder_max_text_length=64),
        image_vit_cfg=ViTConfig(emb_dim=m.vit_dim, num_heads=m.vit_dim // 64, head_dim=64, mlp_dim=2 * m.vit_dim,
                                num_layers=m.vit_layers),
        image_history_cfg=ResamplerConfig(emb_dim=64, num_heads=1, head_dim=64, mlp_dim=128, max_frames=4,
                                          latents_size=8),
        sequence_length={"is_training": True, "image_history_input_samples": (m.history_size // 16) ** 2,
                         "audio_input_samples": 128, "audio_history_input_samples": 128,
                         "num_frames": max(1, num_frames)},
        freeze_vit=False, input_modalities=["text", "image", "image_history"], target_modalities=["text"],
        use_audio_vit=False, use_audio_history_vit=False)
    return resized_config(config, m.image_size)


def model_config(m: ModelRecipe, tokenizer_pieces: int, num_frames: int) -> UIO2Config:
    vocab = round_vocab(tokenizer_pieces)
    if m.size == "small":
        return small_config(m, vocab, num_frames)
    config = preset(m.size, vocab_size=vocab)
    if num_frames > config.num_frames:
        raise RecipeError(f"recipe: data.history {num_frames} > the {m.size} preset's {config.num_frames} frames")
    return config
