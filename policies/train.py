"""`uio-robot train`: train (or fine-tune) the UIO2 policy on demonstrations and VQA pairs, in one model.

    uio-robot train data.dir=data/demos out_dir=runs/reach train.steps=3000
    torchrun --nproc_per_node 4 -m uio_robot.policies.train data.dir=... out_dir=...

What a run writes under `out_dir`:
  checkpoint/      the latest model (model.safetensors, config.json, tokenizer.model, uio_robot.json with
                   the codec, the action format and the recipe), replaced atomically at every save
  train_state.pt   weights, optimizer, step, data position and RNG states: `resume` continues from it
  loss.csv / loss.png   the training and validation curves
  recipe.yaml      the recipe of the run (`--config` reads it back)

The normalization statistics are computed from the training episodes (quantiles; a binary gripper
dimension is left unnormalized). With WORLD_SIZE set (torchrun) the model runs under
DistributedDataParallel (NCCL on CUDA, gloo on CPU) and each rank reads its shard of every epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from uio_robot.common.atomic import atomic_write_bytes
from uio_robot.policies.codec import NUM_BINS, Codec
from uio_robot.policies.dataset import (
    ActionExamples,
    DatasetError,
    DemoData,
    ExampleFormat,
    MixedExamples,
    VQAExamples,
    compute_codec,
    load_recordings,
)
from uio_robot.policies.prompts import ActionFormat
from uio_robot.policies.recipe import Recipe, RecipeError, load_recipe, model_config, to_dict
from uio_robot.policies.uio2.checkpoint import load_model, save_checkpoint, tokenizer_file
from uio_robot.policies.uio2.image_size import with_image_size
from uio_robot.policies.uio2.model import UIO2Model, to_batch
from uio_robot.policies.uio2.preprocess import build_batch
from uio_robot.policies.uio2.tokenizer import UIO2Tokenizer, train_tokenizer

STATE_FILE, CSV_FILE, PNG_FILE, RECIPE_FILE = "train_state.pt", "loss.csv", "loss.png", "recipe.yaml"
CHECKPOINT_DIR, TOKENIZER_FILE = "checkpoint", "tokenizer.model"
CSV_FIELDS = ("step", "epoch", "lr", "loss", "action_loss", "vqa_loss", "val_action_loss", "val_vqa_loss",
              "val_action_bin_err", "val_vqa_acc", "val_vqa_bin_err", "elapsed_s")
VAL_EXAMPLES = 96  # per kind: enough for a steady curve, cheap enough to run often


# ---- distributed set-up -------------------------------------------------------------------------

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any (ranks must agree on when to stop)."""
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)


def setup_dist(device_name: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if device_name not in ("auto", "cuda", "cpu"):
        raise RecipeError(f"recipe: train.device must be auto, cuda or cpu, got {device_name!r}")
    if device_name == "cuda" and not torch.cuda.is_available():
        raise RecipeError("recipe: train.device=cuda but CUDA is not available")
    if world <= 1:
        return Dist(0, 1, torch.device("cuda" if cuda else "cpu"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return Dist(torch.distributed.get_rank(), world, torch.device(f"cuda:{local}" if cuda else "cpu"))


# ---- data order ---------------------------------------------------------------------------------

def epoch_order(n: int, seed: int, epoch: int, rank: int, world: int) -> list[int]:
    """This rank's indices of one epoch: a seeded permutation, padded to a multiple of the world size
    and strided by rank (as DistributedSampler does), so a resumed run can recompute it."""
    perm = np.random.default_rng([seed, epoch]).permutation(n).tolist()
    perm += perm[: (-len(perm)) % world]
    return perm[rank::world]


SPLIT_GAIN = 0.9  # split a batch by kind only where that cuts its token count below this fraction


def collate_by_kind(examples: list[dict]) -> list[dict]:
    """The batch as one padded batch, or one batch per kind (action examples, VQA pairs) where that saves
    enough padding to pay for the second, smaller pass.

    A VQA answer is a few tokens and an action chunk 31, so a mixed batch runs the decoder over mostly
    padding for every VQA pair. Split, the same examples give the same loss with fewer tokens. With few
    image tokens (64 px) that made a step 22-40% faster on the 2-core CPU; at 128 px the encoder dominates
    and two half-size passes were slower, hence the token-count rule (encoder tokens count twice: the
    image also passes the ViT)."""
    kinds = [[ex for ex in examples if int(ex["meta/is_action"][0]) == flag] for flag in (1, 0)]
    kinds = [group for group in kinds if group]

    def tokens(group: list[dict], target_len: int) -> int:
        enc = max(len(ex["inputs/text/tokens"]) + 2 * len(ex.get("inputs/image/input", ())) for ex in group)
        return len(group) * (enc + target_len)

    longest = [max(len(ex["targets/text/targets"]) for ex in group) for group in kinds]
    split = sum(tokens(g, n) for g, n in zip(kinds, longest))
    if len(kinds) == 1 or split >= SPLIT_GAIN * tokens(examples, max(longest)):
        return [build_batch(examples)]
    return [build_batch(group) for group in kinds]


def epoch_batches(dataset, order: list[int], position: int, r: Recipe):
    """The rest of an epoch's full batches from `position` on (each a list of per-kind batches, see
    `collate_by_kind`), built in the training process or, with train.workers > 0, by a DataLoader's
    worker processes (on a GPU, building examples on one core is slower than the training step)."""
    size = r.train.batch_size
    batches = [order[i:i + size] for i in range(position, len(order) - size + 1, size)]
    if r.train.workers == 0:
        return (collate_by_kind([dataset[i] for i in idx]) for idx in batches)
    return iter(torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate_by_kind,
                                            num_workers=r.train.workers, prefetch_factor=4))


def lr_at(step: int, r: Recipe) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio * lr at the last step."""
    t = r.train
    if step < t.warmup:
        return t.lr * (step + 1) / t.warmup
    progress = (step - t.warmup) / max(1, t.steps - t.warmup)
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def autocast(t, device: torch.device):
    """The forward pass's precision context for `train.precision` (a no-op for fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16")


# ---- loss ---------------------------------------------------------------------------------------

class TokenLoss:
    """Per-example cross-entropy of the target tokens, with soft targets for location tokens.

    A location token (an action value or an image point) is a bin of an ordered quantity, so with
    `sigma` > 0 its target is a Gaussian over the neighbouring bins (sigma in bins) instead of one class:
    a near miss costs less than a far one, which gives the network a useful gradient long before it
    hits exact bins. Other tokens use the ordinary one-hot target.
    """

    def __init__(self, tokenizer: UIO2Tokenizer, vocab_size: int, sigma: float, device: torch.device):
        ids = torch.tensor([tokenizer.location_token(b) for b in range(NUM_BINS)], device=device)
        self.location_ids = ids  # index b -> token id of bin b
        self.bin_of = torch.full((vocab_size,), -1, dtype=torch.long, device=device)
        self.bin_of[ids] = torch.arange(NUM_BINS, device=device)
        self.sigma = float(sigma)
        self.bins = torch.arange(NUM_BINS, device=device, dtype=torch.float32)

    def __call__(self, model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{"loss": [B], "correct": [B] whole target right, "bin_err": [B] mean |bin error| of the
        location tokens (nan for targets without any)}."""
        logp = model(batch).float().log_softmax(-1)
        targets = batch["targets/text/targets"].long()
        mask = batch["targets/text/mask"].float()
        nll = -logp.gather(-1, targets[..., None])[..., 0]
        bins = self.bin_of[targets]
        is_loc = (bins >= 0) & (mask > 0)
        loc_logp = logp[..., self.location_ids]  # [B, T, 1000] in bin order
        if self.sigma > 0:
            w = torch.exp(-0.5 * ((self.bins - bins[..., None].float()) / self.sigma) ** 2)
            soft = -(w / w.sum(-1, keepdim=True) * loc_logp).sum(-1)
            nll = torch.where(is_loc, soft, nll)
        loss = (nll * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        correct = ((logp.argmax(-1) == targets) | (mask == 0)).all(1)
        err = (loc_logp.argmax(-1) - bins).abs().float() * is_loc
        bin_err = err.sum(1) / is_loc.sum(1).float()  # nan where no location token
        return {"loss": loss, "correct": correct, "bin_err": bin_err}


def split_mean(values: torch.Tensor, is_action: torch.Tensor) -> tuple[float, float]:
    """Mean over action examples and over VQA examples (nan where a kind is absent)."""
    out = []
    for sel in (is_action, ~is_action):
        out.append(float(values[sel].float().mean()) if bool(sel.any()) else float("nan"))
    return out[0], out[1]


# ---- building the run ---------------------------------------------------------------------------

def tokenizer_texts(data: DemoData) -> list[str]:
    """Everything the model reads or writes as words, each text as often as the data uses it, and the
    suite's full vocabulary repeated to weigh as much as the data: a first stage's data (one-object
    scenes) lacks words such as "left" or "behind" that later stages need, and rare words get no pieces."""
    texts = []
    for entry in data.index["episodes"]:
        texts += [entry["instruction"], "robot state"] * entry["steps"]  # one action prompt per step
    texts += [entry["instruction"] for entry in data.index["scenes"]]
    for scene in data.scenes:
        for pair in scene.vqa:
            texts.append(pair["question"])
            if pair["kind"] != "where":
                texts.append(pair["answer"])
    try:
        from uio_robot.envs.vocabulary import suite_vocabulary  # the [sim] extra: gymnasium, mujoco
    except ImportError as err:
        print(f"tokenizer: the suite's vocabulary is unavailable ({err}); trained on the data's texts only",
              file=sys.stderr)
    else:
        suite = suite_vocabulary()
        texts += suite * max(1, round(len(texts) / len(suite)))
    return sorted(texts)


def build_tokenizer(r: Recipe, data: DemoData, out_dir: Path, dist: Dist) -> Path:
    """The init checkpoint's tokenizer, or one trained on this data (pieces from the recipe)."""
    if r.model.init:
        path = tokenizer_file(r.model.init)
        if path is None:
            raise RecipeError(f"recipe: model.init {r.model.init} has no tokenizer.model")
        return path
    path = out_dir / TOKENIZER_FILE
    if dist.main and not path.is_file():
        train_tokenizer(tokenizer_texts(data), path, vocab_size=r.model.tokenizer_pieces)
    dist.barrier()
    return path


@torch.no_grad()
def sincos_positions_(table: torch.Tensor) -> None:
    """Fill the ViT's patch position rows with fixed 2D sine/cosine features (unit scale).

    Why: from scratch, the random position rows (std 0.02) are tiny beside the patch embeddings, so for
    hundreds of steps the network barely knows where a patch is, and pointing at objects (actions,
    "where" answers) is what it has to learn first. Row 0 (the class position) is left as it is.
    """
    side, dim = math.isqrt(table.shape[0] - 1), table.shape[1]
    n_freq = dim // 4
    freqs = 1.0 / (100.0 ** (torch.arange(n_freq, dtype=torch.float64) / max(n_freq, 1)))
    ys, xs = torch.meshgrid(torch.arange(side, dtype=torch.float64), torch.arange(side, dtype=torch.float64),
                            indexing="ij")
    feats = []
    for coord in (ys.reshape(-1), xs.reshape(-1)):
        angles = coord[:, None] * freqs[None, :] * (math.pi / 2)
        feats += [angles.sin(), angles.cos()]
    rows = torch.cat(feats, 1)
    table[1:, : rows.shape[1]] = rows.to(table.dtype)


@torch.no_grad()
def smooth_location_embeddings_(model: UIO2Model, tokenizer: UIO2Tokenizer) -> None:
    """Give the 1000 location tokens sine/cosine embeddings of their bin (periods 8..2000 bins).

    Why: the token table is shared by the input (state values) and the tied output logits (actions,
    points). Random rows make every bin an unrelated class, and the network must learn the order of a
    thousand classes before a near miss means anything. With smooth rows, neighbouring bins start close,
    the logits over bins are smooth, and a written state value is readable as a number from step one.
    """
    table = model.text_token_embedder.weight
    dim = table.shape[1]
    n_freq = dim // 2
    periods = 8.0 * (2000.0 / 8.0) ** (torch.arange(n_freq, dtype=torch.float64) / max(n_freq - 1, 1))
    bins = torch.arange(NUM_BINS, dtype=torch.float64)
    angles = bins[:, None] * (2 * math.pi / periods[None, :])
    rows = torch.cat([angles.sin(), angles.cos()], 1)[:, :dim]
    rows *= table.float().std() / rows.std()
    ids = torch.tensor([tokenizer.location_token(b) for b in range(NUM_BINS)])
    table[ids] = rows.to(table.dtype)


def scratch_model(config, tokenizer: UIO2Tokenizer, seed: int) -> UIO2Model:
    """A network to train from scratch: random weights, then the two structured inits above."""
    model = UIO2Model(config).init_weights(seed)
    sincos_positions_(model.input_embedders["image"].image_encoder.vision_transformer.positional_embedding)
    smooth_location_embeddings_(model, tokenizer)
    return model


def build_model(r: Recipe, tokenizer: UIO2Tokenizer, device: torch.device) -> UIO2Model:
    if r.model.init:
        model = load_model(r.model.init, dtype=torch.float32, device=device)
        if r.model.init_image_size:
            model = with_image_size(model, r.model.init_image_size)
        if r.data.history > model.config.num_frames:
            raise RecipeError(f"recipe: data.history {r.data.history} > the checkpoint's "
                              f"{model.config.num_frames} history frames")
    else:
        config = model_config(r.model, tokenizer.model_vocab_size, r.data.history)
        model = scratch_model(config, tokenizer, r.train.seed).to(device)
    if tokenizer.vocab_size > model.config.t5_config.vocab_size:
        raise RecipeError(f"tokenizer has {tokenizer.vocab_size} ids but the model only "
                          f"{model.config.t5_config.vocab_size}")
    return model.requires_grad_(True).train()


def action_format(r: Recipe) -> ActionFormat:
    d = r.data
    return ActionFormat(chunk=d.chunk, history=d.history, history_stride=d.history_stride, camera=d.camera,
                        state_dims=tuple(d.state_dims))


def example_format(r: Recipe, codec: Codec, model: UIO2Model) -> ExampleFormat:
    t = model.config.t5_config
    return ExampleFormat(action_format(r), codec, t.default_image_vit_size[0],
                         t.default_image_history_vit_size[0], model.config.num_frames, t.encoder_max_text_length)


def metadata(r: Recipe, codec: Codec, data: DemoData, step: int, n_train: int) -> dict:
    return {"codec": codec.to_dict(), "action_format": action_format(r).to_dict(),
            "control_period_s": data.index.get("control_period_s"),
            "train": {"recipe": to_dict(r), "step": step, "train_episodes": n_train,
                      "vqa_scenes": len(data.scenes), "tasks": sorted({e.task for e in data.episodes})}}


# ---- logging and saving -------------------------------------------------------------------------

def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def read_csv(path: Path, up_to_step: int) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f) if int(row["step"]) <= up_to_step]


def plot_curves(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style in (("action_loss", "-"), ("vqa_loss", "-"), ("val_action_loss", "o--"),
                       ("val_vqa_loss", "o--")):
        pts = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "", "nan")]
        pts = [(s, v) for s, v in pts if math.isfinite(v)]
        if pts:
            ax.plot(*zip(*pts), style, label=key, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (per token)")
    ax.set_yscale("log")
    if ax.lines:
        ax.legend()
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def save_state(path: Path, model: UIO2Model, optimizer, step: int, epoch: int, position: int) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "epoch": epoch,
             "position": position, "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                                           "python": random.getstate()}}
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


# ---- the loop -----------------------------------------------------------------------------------

@torch.no_grad()
def validate(model, loss_fn: TokenLoss, val_sets: list[list[dict]], device) -> dict[str, float]:
    """Teacher-forced loss, exact-match rate of the whole target (VQA) and mean location-bin error."""
    model.eval()
    out = {}
    for name, examples in zip(("action", "vqa"), val_sets):
        parts: dict[str, list[torch.Tensor]] = {"loss": [], "correct": [], "bin_err": []}
        for i in range(0, len(examples), 32):
            result = loss_fn(model, to_batch(build_batch(examples[i:i + 32]), device))
            for key in parts:
                parts[key].append(result[key].float())
        if not examples:
            continue
        values = {k: torch.cat(v) for k, v in parts.items()}
        out[f"val_{name}_loss"] = float(values["loss"].mean())
        out[f"val_{name}_bin_err"] = float(values["bin_err"].nanmean())
        if name == "vqa":
            out["val_vqa_acc"] = float(values["correct"].mean())
    model.train()
    return out


def train(r: Recipe) -> Path:
    from tqdm import tqdm

    if r.train.threads > 0:
        torch.set_num_threads(r.train.threads)
    dist = setup_dist(r.train.device)
    out_dir = Path(r.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(r.train.seed + dist.rank)
    np.random.seed(r.train.seed + dist.rank)
    random.seed(r.train.seed + dist.rank)

    data = load_recordings([r.data.dir, *r.data.more_dirs], tasks=r.data.tasks, cameras=(r.data.camera,),
                           progress=dist.main)
    if not data.episodes and r.data.vqa_fraction == 0:
        raise RecipeError(f"{r.data.dir}: no successful episodes of tasks {r.data.tasks}")
    episodes = sorted(data.episodes, key=lambda e: (e.task, e.seed))
    n_val = min(r.data.val_episodes, len(episodes) // 5)
    val_idx = set(_spread(len(episodes), n_val)) if n_val else set()
    val_eps = [e for i, e in enumerate(episodes) if i in val_idx]
    train_eps = [e for i, e in enumerate(episodes) if i not in val_idx]
    codec = compute_codec(DemoData(data.index, train_eps or episodes, []), r.data.chunk, r.data.stats_mode)

    tok_path = build_tokenizer(r, data, out_dir, dist)
    tokenizer = UIO2Tokenizer(tok_path)
    model = build_model(r, tokenizer, dist.device)
    fmt = example_format(r, codec, model)
    loss_fn = TokenLoss(tokenizer, model.config.t5_config.vocab_size, r.train.location_sigma, dist.device)
    mixed = MixedExamples(ActionExamples(train_eps, tokenizer, fmt),
                          VQAExamples(data.scenes, tokenizer, fmt, repeat=r.data.kind_repeat,
                                      kinds=r.data.vqa_kinds),
                          r.data.vqa_fraction)
    val_actions = ActionExamples(val_eps, tokenizer, fmt)
    val_sets = [[val_actions[i] for i in _spread(len(val_actions), VAL_EXAMPLES)]]
    val_vqa = VQAExamples(data.scenes, tokenizer, fmt, split="heldout", kinds=r.data.vqa_kinds)
    val_sets.append([val_vqa[i] for i in _spread(len(val_vqa), VAL_EXAMPLES)])

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n.rsplit(".", 1)[-1]]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and
                                                              "embedding" not in n.rsplit(".", 1)[-1])]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": r.train.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=r.train.lr, betas=(0.9, 0.95))
    step, epoch, position = 0, 0, 0
    state_path = out_dir / STATE_FILE
    if r.train.resume and state_path.is_file():
        state = torch.load(state_path, map_location=dist.device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, epoch, position = state["step"], state["epoch"], state["position"]
        torch.set_rng_state(state["rng"]["torch"].cpu())
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        if dist.main:
            print(f"resuming from step {step} (epoch {epoch}, position {position})")
    rows = read_csv(out_dir / CSV_FILE, step) if dist.main else []
    if dist.main:
        (out_dir / RECIPE_FILE).write_text(_yaml(r))
        print(f"train: {len(train_eps)} episodes ({len(mixed.actions)} action examples), "
              f"{len(mixed.vqa)} VQA pairs, {len(mixed)} examples/epoch, model "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {dist.world} process(es)")

    net = model
    if dist.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
            find_unused_parameters=True)

    def save() -> None:
        if not dist.main:
            return
        save_checkpoint(model, out_dir / CHECKPOINT_DIR, tokenizer=tok_path,
                        metadata=metadata(r, codec, data, step, len(train_eps)))
        write_csv(out_dir / CSV_FILE, rows)
        plot_curves(out_dir / PNG_FILE, rows)
        save_state(state_path, model, optimizer, step, epoch, position)  # last: a resume rereads the rest

    start, window, stop = time.time(), [], ""
    bar = tqdm(total=r.train.steps, initial=step, desc="train", disable=not dist.main, unit="step")
    while step < r.train.steps:
        mixed.set_epoch(epoch)
        order = epoch_order(len(mixed), r.train.seed, epoch, dist.rank, dist.world)
        for kind_batches in epoch_batches(mixed, order, position, r):
            if step >= r.train.steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, r)
            optimizer.zero_grad(set_to_none=True)
            losses, is_action = [], []
            for i, batch_np in enumerate(kind_batches):  # gradients of the kinds accumulate: one step
                last = i == len(kind_batches) - 1
                with (net.no_sync() if dist.world > 1 and not last else contextlib.nullcontext()):
                    with autocast(r.train, dist.device):
                        part = loss_fn(net, to_batch(batch_np, dist.device))["loss"]
                    (part.sum() / r.train.batch_size).backward()
                losses.append(part.detach().cpu())
                is_action.append(torch.from_numpy(batch_np["meta/is_action"][:, 0] > 0))
            losses, is_action = torch.cat(losses), torch.cat(is_action)
            torch.nn.utils.clip_grad_norm_(model.parameters(), r.train.grad_clip)
            optimizer.step()
            step += 1
            position += r.train.batch_size
            window.append((float(losses.mean()), *split_mean(losses, is_action)))
            bar.update(1)
            logged = step % r.train.log_every == 0 or step == r.train.steps
            evaluated = logged and (step % r.train.eval_every == 0 or step == r.train.steps)
            where_bins = math.inf
            if dist.main and logged:
                row = _row(step, epoch, optimizer.param_groups[0]["lr"], window, time.time() - start)
                if evaluated:
                    val = validate(model, loss_fn, val_sets, dist.device)
                    row.update({k: f"{v:.5f}" for k, v in val.items() if k in CSV_FIELDS})
                    where_bins = val.get("val_vqa_bin_err", math.inf)
                rows.append(row)
                bar.set_postfix(loss=row["loss"])
                window = []
            if step % r.train.save_every == 0 or step == r.train.steps:
                save()
            if r.train.stop_where_bins > 0 and evaluated and dist.any(where_bins <= r.train.stop_where_bins):
                stop = f"where error {where_bins:.1f} bins <= train.stop_where_bins={r.train.stop_where_bins:g}"
            elif r.train.max_minutes > 0 and step % r.train.log_every == 0 and dist.any(
                    time.time() - start > r.train.max_minutes * 60):
                stop = f"train.max_minutes={r.train.max_minutes:g} reached"
            if stop:
                break
        if stop:
            if dist.main:
                if "val_action_loss" not in rows[-1]:  # the stop's logged step: give its row validation figures
                    rows[-1].update({k: f"{v:.5f}" for k, v in validate(model, loss_fn, val_sets, dist.device).items()
                                     if k in CSV_FIELDS})
                print(f"train: {stop} at step {step}; saved")
            save()
            break
        if step < r.train.steps:
            epoch, position = epoch + 1, 0
    bar.close()
    dist.barrier()
    if dist.world > 1:
        torch.distributed.destroy_process_group()
    return out_dir / CHECKPOINT_DIR


def _spread(n: int, k: int) -> list[int]:
    return sorted({int(i) for i in np.linspace(0, n - 1, min(n, k))}) if n else []


def _row(step: int, epoch: int, lr: float, window: list[tuple], elapsed: float) -> dict:
    arr = np.array(window, dtype=np.float64)
    means = [np.nanmean(arr[:, i]) if np.isfinite(arr[:, i]).any() else float("nan") for i in range(3)]
    return {"step": step, "epoch": epoch, "lr": f"{lr:.3e}", "loss": f"{means[0]:.5f}",
            "action_loss": f"{means[1]:.5f}", "vqa_loss": f"{means[2]:.5f}", "elapsed_s": f"{elapsed:.1f}"}


def _yaml(r: Recipe) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(r))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="uio-robot train", description=__doc__.split("\n\n")[0],
                                epilog="overrides: key=value by dotted path, e.g. train.steps=2000 "
                                       "data.dir=data/demos out_dir=runs/x model.init=CHECKPOINT")
    p.add_argument("--config", default=None, help="a recipe YAML (e.g. a run's recipe.yaml)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    try:
        recipe = load_recipe(args.overrides, args.config)
        path = train(recipe)
    except (RecipeError, DatasetError) as exc:
        print(f"uio-robot train: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"checkpoint: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
