"""`uio-robot train-vima`: train a small UIO2 primitive policy on recorded VIMA-style demonstrations.

    uio-robot train-vima data.dir=DIR out_dir=OUT [train.steps=1500] [train.batch_size=16] [model.emb_dim=256] ...
    uio-robot train-vima data.dir=DIR out_dir=OUT model.init=policies/assets/default [train.max_minutes=30] ...

`model.init=CHECKPOINT` starts from a trained UIO2 checkpoint instead of random weights, loaded as
`uio-robot train` loads its `model.init` (`checkpoint.load_model`): the network is the checkpoint's
(the `model.*` sizes are ignored), and so is the tokenizer (the checkpoint's SentencePiece model has
byte fallback, so words it never saw still encode). Why: the shipped default model already grounds
objects in the front camera, which a primitive policy needs first (which object to pick). Only the
number of image-history frames changes (to `data.prompt_images`, within the checkpoint's resampler
`max_frames`); that changes no weight. `train.max_minutes` stops and saves after that long.

The network, tokenizer training, loss (soft location targets), learning-rate schedule and checkpoint
files are those of `uio-robot train` (`policies.train`, `policies.recipe`); what differs is the data:
one example per primitive decision, the multimodal prompt in the image history, the camera image as
the image input, six location tokens as the target (`vima_data.PrimitiveExamples`). The checkpoint
(`OUT/checkpoint`) is a `UIO2PrimitivePolicy` checkpoint: prompt_format "vima_primitive", the
primitive codec over the dataset's action bounds. A loss CSV is written beside it, and
`OUT/checkpoint_best` holds the weights of the lowest held-out loss seen at a log step.

`data.where_fraction=F` (default 0) makes that share of every batch grounding questions,
"where is <image_history_1> ?" -> the picked object's x, y location tokens (`vima_data.WhereExamples`),
built from the pick-and-place demos' first frames; the CSV then also has their held-out bin error. Why:
a primitive policy must first find the prompted object, and the primitive targets alone did not teach
it (see envs/vima/README.md). A grounding stage is a run with a high F, then a run from its checkpoint
(`model.init`) with a lower one.

`data.where_scenes=N` (default 0: off; needs `data.where_fraction` > 0) takes the where questions from
N freshly generated scenes of the training partition instead of the demos: every object of each scene,
with its own prompt image (`vima_grounding.generate_where_questions`, in-process at start, about 40
scenes/s), on the demos' camera and image size; 40 more scenes at seeds from `WHERE_VAL_SEED` are the
held-out questions. Why: the demos give one question per pick-and-place episode, too few to learn
matching rather than memorize scenes.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from uio_robot.common.atomic import atomic_write_bytes
from uio_robot.policies.dataset import DatasetError
from uio_robot.policies.prompts import ActionFormat
from uio_robot.policies.recipe import ModelRecipe, OptimRecipe, RecipeError, model_config, validate_optim
from uio_robot.policies.train import TokenLoss, autocast, lr_at, scratch_model
from uio_robot.policies.uio2.checkpoint import CheckpointError, load_model, save_checkpoint, tokenizer_file
from uio_robot.policies.uio2.model import UIO2Model, to_batch
from uio_robot.policies.uio2.preprocess import build_batch
from uio_robot.policies.uio2.tokenizer import UIO2Tokenizer, train_tokenizer
from uio_robot.policies.vima_data import (
    WHERE_QUESTION,
    WHERE_TEMPLATES,
    PrimitiveExamples,
    WhereExamples,
    load_episodes,
    prompt_texts,
)
from uio_robot.policies.vima_grounding import MAX_SCENES, GeneratedWhereExamples, generate_where_questions
from uio_robot.policies.vima_prompts import PROMPT_FORMAT, primitive_codec

# Words of every VIMA-style prompt, also those of tasks absent from the demonstrations (level 4), so the
# tokenizer has pieces for them.
EXTRA_TEXTS = ("put all objects with the same colour as into the", "this is a dax blicket wug zup gazer tufa fep kiki",
               "put the into the rearrange to this same shape push")
# Held-out generated where questions: scenes at seeds from WHERE_VAL_SEED (per task; training scenes use
# seeds below MAX_SCENES / 4 per task, evaluation seeds start at 100000).
WHERE_VAL_SCENES, WHERE_VAL_SEED = 40, 90_000


@dataclass
class VimaData:
    dir: str = "data/vima_demos"
    tasks: list[str] = field(default_factory=list)  # empty: every task in the dataset
    val_episodes: int = 10
    prompt_images: int = 2  # image-history frames = most prompt images per request
    where_fraction: float = 0.0  # share of each batch that is "where is <image_history_1> ?" grounding
    where_scenes: int = 0  # > 0: the where questions come from this many generated scenes, not the demos


@dataclass
class VimaRecipe:
    out_dir: str = "runs/vima"
    model: ModelRecipe = field(default_factory=lambda: ModelRecipe(tokenizer_pieces=320))
    data: VimaData = field(default_factory=VimaData)
    # The main trainer's optimiser fields (train.resume, eval_every and device are not used here).
    train: OptimRecipe = field(default_factory=lambda: OptimRecipe(steps=1500, warmup=100, location_sigma=6.0,
                                                                   save_every=250))


def load_recipe(overrides: list[str]) -> VimaRecipe:
    base = OmegaConf.structured(VimaRecipe)
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(overrides))
    except Exception as exc:  # omegaconf raises several error types for unknown keys / bad values
        raise RecipeError(f"train-vima: bad override ({exc})") from None
    recipe: VimaRecipe = OmegaConf.to_object(merged)
    validate_optim(recipe.train)
    if recipe.data.prompt_images < 1:
        raise RecipeError("train-vima: data.prompt_images must be >= 1")
    if not 0.0 <= recipe.data.where_fraction < 1.0:
        raise RecipeError(f"train-vima: data.where_fraction must be in [0, 1), got {recipe.data.where_fraction}")
    if not 0 <= recipe.data.where_scenes <= MAX_SCENES:
        raise RecipeError(f"train-vima: data.where_scenes must be in [0, {MAX_SCENES}], got {recipe.data.where_scenes}")
    if recipe.data.where_scenes and not recipe.data.where_fraction:
        raise RecipeError("train-vima: data.where_scenes > 0 needs data.where_fraction > 0 (no where questions "
                          "would be drawn)")
    return recipe


def train_vima(r: VimaRecipe) -> Path:
    from tqdm import tqdm

    if r.train.threads > 0:
        torch.set_num_threads(r.train.threads)
    torch.manual_seed(r.train.seed)
    rng = random.Random(r.train.seed)
    out = Path(r.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index, episodes = load_episodes(r.data.dir, r.data.tasks)
    if not episodes:
        raise RecipeError(f"{r.data.dir}: no successful episodes of tasks {r.data.tasks or 'any'}")
    episodes.sort(key=lambda e: (e.task, e.seed))
    val_idx = set(np.linspace(0, len(episodes) - 1, min(r.data.val_episodes, len(episodes) // 5)).astype(int))
    train_eps = [e for i, e in enumerate(episodes) if i not in val_idx]
    val_eps = [e for i, e in enumerate(episodes) if i in val_idx]
    codec = primitive_codec(index["action_low"], index["action_high"])
    tok_path, tokenizer, model = initial_model(r, episodes, out)
    model.requires_grad_(True).train()
    t5 = model.config.t5_config
    sizes = (t5.default_image_vit_size[0], t5.default_image_history_vit_size[0], model.config.num_frames,
             t5.encoder_max_text_length)
    data = PrimitiveExamples(train_eps, tokenizer, codec, *sizes)
    val = PrimitiveExamples(val_eps, tokenizer, codec, *sizes)
    where, where_val = where_examples(r, index, train_eps, val_eps, tokenizer, codec, sizes)
    n_where = round(r.train.batch_size * r.data.where_fraction)
    if n_where and not len(where):
        raise RecipeError(f"train-vima: data.where_fraction > 0 but no training episode has a template in "
                          f"{WHERE_TEMPLATES}")
    loss_fn = TokenLoss(tokenizer, t5.vocab_size, r.train.location_sigma, torch.device("cpu"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=r.train.lr, weight_decay=r.train.weight_decay,
                                  betas=(0.9, 0.95))
    meta = {"codec": codec.to_dict(), "action_format": ActionFormat(chunk=1, camera=index["camera"]).to_dict(),
            "prompt_format": PROMPT_FORMAT, "control_period_s": 1.0,
            "train": {"recipe": OmegaConf.to_container(OmegaConf.structured(r)), "episodes": len(train_eps),
                      "examples": len(data), "where_examples": len(where) if n_where else 0,
                      "tasks": sorted({e.task for e in train_eps})}}
    print(f"train-vima: {len(train_eps)} episodes, {len(data)} examples, {len(val)} validation examples, "
          f"{len(where) if n_where else 0} where examples ({n_where} per batch), model "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters", file=sys.stderr)
    rows = ["step,loss,val_loss,val_bin_err,seconds" + (",val_where_bin_err" if n_where else "")]
    order: list[int] = []
    where_order: list[int] = []
    started, window, best = time.time(), [], float("inf")
    for step in tqdm(range(r.train.steps), desc="train-vima", unit="step", file=sys.stderr):
        idx, order = _draw(order, len(data), r.train.batch_size - n_where, rng)
        examples = [data[i] for i in idx]
        if n_where:
            w_idx, where_order = _draw(where_order, len(where), n_where, rng)
            examples += [where[i] for i in w_idx]
        batch = to_batch(build_batch(examples), torch.device("cpu"))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, r)
        with autocast(r.train, torch.device("cpu")):
            loss = loss_fn(model, batch)["loss"].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), r.train.grad_clip)
        optimizer.step()
        window.append(loss.item())
        timed_out = r.train.max_minutes > 0 and time.time() - started > r.train.max_minutes * 60
        last = step + 1 == r.train.steps or timed_out
        if (step + 1) % r.train.log_every == 0 or last:
            v_loss, v_err = _validate(model, loss_fn, val)
            row = f"{step + 1},{np.mean(window):.5f},{v_loss:.5f},{v_err:.2f},{time.time() - started:.0f}"
            rows.append(row + (f",{_validate(model, loss_fn, where_val)[1]:.2f}" if n_where else ""))
            window = []
            if v_loss < best:  # a small demo set overfits: keep the weights of the lowest held-out loss
                best = v_loss
                save_checkpoint(model, out / "checkpoint_best", tokenizer=tok_path,
                                metadata={**meta, "step": step + 1, "val_loss": v_loss})
        if (step + 1) % r.train.save_every == 0 or last:
            save_checkpoint(model, out / "checkpoint", tokenizer=tok_path, metadata=meta)
            atomic_write_bytes(out / "loss.csv", ("\n".join(rows) + "\n").encode())
        if timed_out:
            print(f"train-vima: train.max_minutes={r.train.max_minutes:g} reached after step {step + 1}; saved",
                  file=sys.stderr)
            break
    return out / "checkpoint"


def where_examples(r: VimaRecipe, index: dict, train_eps, val_eps, tokenizer, codec, sizes):
    """(training, held-out) where questions: generated scenes' when `data.where_scenes`, else the demos'."""
    if not r.data.where_scenes:
        return WhereExamples(train_eps, tokenizer, codec, *sizes), WhereExamples(val_eps, tokenizer, codec, *sizes)
    camera, image_size = index["camera"], int(index["image_size"])
    train = generate_where_questions(r.data.where_scenes, image_size, camera)
    val = generate_where_questions(WHERE_VAL_SCENES, image_size, camera, first_seed=WHERE_VAL_SEED)
    return (GeneratedWhereExamples(train, tokenizer, codec, *sizes),
            GeneratedWhereExamples(val, tokenizer, codec, *sizes))


def _draw(order: list[int], size: int, n: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """The next `n` indices of a shuffled pass over `size` examples (a new pass appended when short)."""
    while len(order) < n:
        fresh = list(range(size))
        rng.shuffle(fresh)
        order = order + fresh
    return order[:n], order[n:]


def initial_model(r: VimaRecipe, episodes, out: Path) -> tuple[Path, UIO2Tokenizer, UIO2Model]:
    """(tokenizer file, tokenizer, network): the `model.init` checkpoint's, or new ones for this data."""
    if not r.model.init:
        tok_path = out / "tokenizer.model"
        texts = prompt_texts(episodes) + list(EXTRA_TEXTS)
        if r.data.where_fraction:
            texts.append(" ".join(WHERE_QUESTION))
        train_tokenizer(texts * 20, tok_path, vocab_size=r.model.tokenizer_pieces)
        tokenizer = UIO2Tokenizer(tok_path)
        config = model_config(r.model, tokenizer.model_vocab_size, r.data.prompt_images)
        return tok_path, tokenizer, scratch_model(config, tokenizer, r.train.seed)
    tok_path = tokenizer_file(r.model.init)
    if tok_path is None:
        raise RecipeError(f"train-vima: model.init {r.model.init} has no tokenizer.model")
    model = load_model(r.model.init, dtype=torch.float32, device=torch.device("cpu"))
    frames = model.config.image_history_cfg.max_frames
    if r.data.prompt_images > frames:
        raise RecipeError(f"train-vima: data.prompt_images {r.data.prompt_images} > the model.init checkpoint's "
                          f"{frames} history frames")
    model.config.sequence_length["num_frames"] = r.data.prompt_images  # rotary frame positions: no new weights
    model.config.validate()
    tokenizer = UIO2Tokenizer(tok_path)
    if tokenizer.vocab_size > model.config.t5_config.vocab_size:
        raise RecipeError(f"train-vima: model.init's tokenizer has {tokenizer.vocab_size} ids, its network "
                          f"{model.config.t5_config.vocab_size}")
    return tok_path, tokenizer, model


@torch.no_grad()
def _validate(model, loss_fn: TokenLoss, val: PrimitiveExamples) -> tuple[float, float]:
    if not len(val):
        return float("nan"), float("nan")
    model.eval()
    try:
        batch = to_batch(build_batch([val[i] for i in range(min(len(val), 32))]), torch.device("cpu"))
        out = loss_fn(model, batch)
        return float(out["loss"].mean()), float(out["bin_err"].nanmean())
    finally:
        model.train()


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    try:
        path = train_vima(load_recipe(argv))
    except (RecipeError, DatasetError, CheckpointError) as exc:
        print(f"uio-robot train-vima: {exc}", file=sys.stderr)
        return 2
    print(f"checkpoint: {path}")
    return 0
