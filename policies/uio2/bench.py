"""`uio-robot bench`: time UIO2 inference stages with random weights, fast or plain path, CPU or GPU.

Setting (the issue's): per example one 384x384 camera image, 2 history frames, a 40-token prompt.
A simulated control loop: at tick i the image is frame i and the history is frames i-2, i-1, so the
fast path's history cache computes exactly one new frame per tick (the newest) and reuses the other.
Stages, each over the timed iterations (warm-up excluded), p50/p90/p99 in ms:
- preprocess: image (and, plain path, history frames) resized, normalized, patchified (plain: the
  TF-exact numpy path the policy uses; fast: torch ops on the device);
- vision: image ViT + projection, and the history embeddings (fast: cache lookups + one new frame);
- encoder: the encoder stack (fast path: plus the per-request cross-attention keys/values, which the
  plain path computes inside generate());
- decode_token: one decode step: (time of a 32-token decode - time of a 1-token decode) / 31, which
  leaves out what a request pays once (plain: cross-attention K/V; fast: mask and buffer set-up);
- action_step: end to end, 8 tokens constrained to location tokens;
- answer32: end to end, a 32-token unconstrained answer (EOS suppressed);
- after_step: work done after the actions are out, before the next observation (fast path with
  prefetch: this frame's history features, so the next tick finds both history frames cached).
decode_gbps = bytes a decode step must read (decoder weights, output table, cross K/V, self caches) /
decode token time. peak_mem_mb: peak allocated GPU memory, or the process's peak RSS on a CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from uio_robot.common.atomic import atomic_write_json
from uio_robot.policies.uio2.checkpoint import pick_device
from uio_robot.policies.uio2.config import preset
from uio_robot.policies.uio2.fast import FastGenerator
from uio_robot.policies.uio2.generate import generate
from uio_robot.policies.uio2.model import Encoded, UIO2Model, to_batch
from uio_robot.policies.uio2.preprocess import build_batch, preprocess_image, preprocess_image_torch

IMAGE = 384
PROMPT = 40
HISTORY = 2
ACTION_TOKENS = 8
ANSWER_TOKENS = 32
STAGES = ("preprocess", "vision", "encoder", "decode_token", "action_step", "answer32", "after_step")


def random_batch(model: UIO2Model, batch: int, prompt_len: int, frames_used: int, seed: int = 0) -> dict:
    """A synthetic preprocessed batch of the model's input shapes: full image, `frames_used` history frames."""
    cfg, g = model.config, torch.Generator().manual_seed(seed)
    t = cfg.t5_config
    n_img = cfg.image_grid[0] * cfg.image_grid[1]
    n_hist = cfg.history_grid[0] * cfg.history_grid[1]
    pixels = 3 * t.image_vit_patch_size ** 2
    frames = cfg.num_frames
    history_mask = torch.zeros(batch, frames, n_hist, dtype=torch.int32)
    history_mask[:, :frames_used] = 1
    return {
        "inputs/text/tokens": torch.randint(3, t.vocab_size, (batch, prompt_len), generator=g),
        "inputs/text/mask": torch.ones(batch, prompt_len, dtype=torch.int32),
        "inputs/text/pos_ids": torch.arange(prompt_len).expand(batch, -1),
        "inputs/image/input": torch.randn(batch, n_img, pixels, generator=g),
        "inputs/image/mask": torch.ones(batch, n_img, dtype=torch.int32),
        "inputs/image/pos_ids": torch.arange(n_img).expand(batch, -1),
        "inputs/image_history/input": torch.randn(batch, frames, n_hist, pixels, generator=g),
        "inputs/image_history/mask": history_mask,
        "inputs/image_history/pos_ids": torch.arange(n_hist).expand(batch, frames, -1),
    }


def location_ids(vocab_size: int) -> list[int]:
    """The 1000 location-bin ids of a UIO2 vocabulary of this size (N..N+999 for N SentencePiece pieces)."""
    start = max(3, vocab_size - 1280)
    return list(range(start, min(vocab_size, start + 1000)))


class Scene:
    """Camera frames and prompts of the simulated loop (uint8 host arrays, as a camera driver gives them)."""

    def __init__(self, model: UIO2Model, batch: int, pool: int = 6, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.batch = batch
        self.frames = [rng.integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8) for _ in range(pool)]
        vocab = model.config.t5_config.vocab_size
        self.prompt = rng.integers(3, vocab, (batch, PROMPT)).astype(np.int64)
        self.prompt[:, -1] = 1  # EOS ends a prompt

    def image(self, tick: int, row: int) -> np.ndarray:
        return self.frames[(tick + row) % len(self.frames)]

    def history(self, tick: int, row: int) -> list[tuple[tuple[int, int], np.ndarray]]:
        """(key, frame) of the previous HISTORY ticks, oldest first; the key names the frame."""
        return [((row, k), self.image(k, row)) for k in range(tick - HISTORY, tick)]


class Plain:
    """The plain path as the policy runs it: numpy preprocessing, model.encode, generate()."""

    name = "plain"

    def __init__(self, model: UIO2Model, scene: Scene):
        self.model, self.scene = model, scene

    def preprocess(self, tick: int) -> dict:
        examples = []
        for row in range(self.scene.batch):
            patches, mask, _ = preprocess_image(self.scene.image(tick, row), IMAGE)
            hist = [preprocess_image(f, 256) for _, f in self.scene.history(tick, row)]
            slots = self.model.config.num_frames
            h_in = np.zeros((slots, *hist[0][0].shape), np.float32)
            h_mask = np.zeros((slots, hist[0][1].shape[0]), np.int32)
            for t, (p, m, _) in enumerate(hist):
                h_in[t], h_mask[t] = p, m
            tokens = self.scene.prompt[row]
            examples.append({
                "inputs/text/tokens": tokens, "inputs/text/mask": np.ones_like(tokens, dtype=np.int32),
                "inputs/text/pos_ids": np.arange(tokens.size, dtype=np.int32),
                "inputs/image/input": patches, "inputs/image/mask": mask,
                "inputs/image/pos_ids": np.arange(mask.size, dtype=np.int32),
                "inputs/image_history/input": h_in, "inputs/image_history/mask": h_mask,
                "inputs/image_history/pos_ids": np.tile(np.arange(h_mask.shape[1], dtype=np.int32), (slots, 1)),
            })
        return to_batch(build_batch(examples), self.model.device)

    def vision(self, batch: dict):
        return self.model.embed_inputs(batch)

    def encoder(self, embedded) -> Encoded:
        """The encoder stack; generate() computes the cross-attention K/V itself (in the decode stage)."""
        x, mask, rope = embedded
        return Encoded(self.model.encoder(x, mask, rope), mask, rope)

    def after_step(self, tick: int) -> None:
        """The plain path keeps nothing between ticks."""

    def decode(self, encoded: Encoded, steps: int, allowed) -> torch.Tensor:
        locs = None if allowed is None else (lambda step, tokens: allowed)
        return generate(self.model, encoded=encoded, max_new_tokens=steps, min_new_tokens=steps,
                        allowed_tokens=locs).tokens

    def decode_bytes(self, fast: FastGenerator) -> int:
        return fast.decode_bytes_per_token(self.scene.batch, PROMPT + 576 + 32 * self.model.config.num_frames)


class Fast:
    """The fast path: device preprocessing, cached history features, FastGenerator."""

    name = "fast"

    def __init__(self, model: UIO2Model, scene: Scene, generator: FastGenerator, prefetch: bool):
        self.model, self.scene, self.gen, self.prefetch = model, scene, generator, prefetch
        self.locs: torch.Tensor | None = None

    def preprocess(self, tick: int) -> dict:
        dev = self.model.device
        rows = [preprocess_image_torch(torch.from_numpy(self.scene.image(tick, r)).to(dev), IMAGE)
                for r in range(self.scene.batch)]
        tokens = torch.from_numpy(self.scene.prompt).to(dev)
        n = rows[0][0].shape[0]
        return {"inputs/text/tokens": tokens, "inputs/text/mask": torch.ones_like(tokens, dtype=torch.int32),
                "inputs/image/input": torch.stack([p for p, _, _ in rows]),
                "inputs/image/mask": torch.stack([m for _, m, _ in rows]),
                "inputs/image/pos_ids": torch.arange(n, device=dev).expand(self.scene.batch, -1),
                "tick": tick}

    def vision(self, batch: dict):
        dev = self.model.device
        keys, frames = [], []
        for row in range(self.scene.batch):
            hist = self.scene.history(batch["tick"], row)
            keys.append([k for k, _ in hist])
            frames.append([(lambda f=f: torch.from_numpy(f).to(dev)) for _, f in hist])
        return batch, self.gen.image_part(batch), self.gen.history_block(keys, frames)

    def encoder(self, parts):
        batch, image, history = parts
        return self.gen.prefill(embedded=self.gen.embed(batch, history=history, image=image))

    def after_step(self, tick: int) -> None:
        """After the actions are out: this tick's frame will be the newest history frame next tick, so
        its history features are computed now, while the robot executes (off the observation-to-action
        path). Without prefetch the next tick computes it itself (one cache miss per tick)."""
        if self.prefetch:
            dev = self.model.device
            self.gen.history.features([(r, tick) for r in range(self.scene.batch)],
                                      [torch.from_numpy(self.scene.image(tick, r)).to(dev)
                                       for r in range(self.scene.batch)])

    def decode(self, state, steps: int, allowed) -> torch.Tensor:
        if allowed is not None:
            if self.locs is None:
                self.locs = self.gen.allowed_mask([allowed], self.scene.batch, self.gen.max_new_tokens)
            allowed = self.locs
        return self.gen.decode(state, allowed, steps, min_new_tokens=steps).tokens

    def decode_bytes(self, fast: FastGenerator) -> int:
        return fast.decode_bytes_per_token(self.scene.batch, fast.bucketed_length(PROMPT) + 576
                                           + 32 * self.model.config.num_frames)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "n": len(ms)}


@torch.no_grad()
def run(preset_name: str, batch: int, plain: bool, device: torch.device, dtype: torch.dtype, iters: int,
        warmup: int, vocab_size: int | None, prefetch: bool = True,
        progress: Callable[[str], None] = lambda s: None) -> dict:
    """All stage timings of one configuration, as the JSON result."""
    model = random_model(preset_name, device, dtype, vocab_size)
    config = model.config
    scene = Scene(model, batch)
    gen = FastGenerator(model, max_batch=batch, max_new_tokens=ANSWER_TOKENS)
    pipe = Plain(model, scene) if plain else Fast(model, scene, gen, prefetch)
    locs = location_ids(config.t5_config.vocab_size)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    stage_ms: dict[str, list[float]] = {s: [] for s in STAGES}
    tick = HISTORY

    def timed(fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        _sync(device)
        return out, (time.perf_counter() - start) * 1e3

    for i in range(warmup + iters):
        keep = i >= warmup
        progress(f"{'warm-up' if not keep else 'iteration'} {i + 1}/{warmup + iters}")
        tick += 1
        pre, t_pre = timed(pipe.preprocess, tick)
        vis, t_vis = timed(pipe.vision, pre)
        enc, t_enc = timed(pipe.encoder, vis)
        _, t_one = timed(pipe.decode, enc, 1, None)
        _, t_all = timed(pipe.decode, enc, ANSWER_TOKENS, None)
        _, t_after = timed(pipe.after_step, tick)
        tick += 1
        _sync(device)
        start = time.perf_counter()
        pipe.decode(pipe.encoder(pipe.vision(pipe.preprocess(tick))), ACTION_TOKENS, locs)
        _sync(device)
        t_action = (time.perf_counter() - start) * 1e3
        pipe.after_step(tick)
        tick += 1
        start = time.perf_counter()
        pipe.decode(pipe.encoder(pipe.vision(pipe.preprocess(tick))), ANSWER_TOKENS, None)
        _sync(device)
        t_answer = (time.perf_counter() - start) * 1e3
        pipe.after_step(tick)
        if keep:
            t_token = (t_all - t_one) / (ANSWER_TOKENS - 1)
            for name, value in zip(STAGES, (t_pre, t_vis, t_enc, t_token, t_action, t_answer, t_after)):
                stage_ms[name].append(value)
    result = {f"{s}_ms": _percentiles(v) for s, v in stage_ms.items()}
    token_ms = result["decode_token_ms"]["p50"]
    bytes_per_token = pipe.decode_bytes(gen)
    result.update({
        "preset": preset_name, "device": _device_name(device), "dtype": str(dtype).replace("torch.", ""),
        "batch": batch, "path": pipe.name, "iters": iters, "warmup": warmup,
        "prompt_tokens": PROMPT, "history_frames": HISTORY, "image_size": IMAGE,
        "vocab_size": config.t5_config.vocab_size,
        "tokens_per_s": batch * 1e3 / token_ms,
        "decode_bytes_per_token": bytes_per_token,
        "decode_gbps": bytes_per_token / (token_ms * 1e-3) / 1e9,
        "peak_mem_mb": _peak_mem_mb(device),
        "cuda_graphs": bool(gen.use_graphs) and not plain,
        "history_prefetch": prefetch and not plain,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    })
    return result


def random_model(preset_name: str, device: torch.device, dtype: torch.dtype,
                 vocab_size: int | None = None) -> UIO2Model:
    """A preset network with seeded random weights, built on `device` in `dtype`, ready for inference."""
    torch.manual_seed(0)
    with torch.device(device):
        model = UIO2Model(preset(preset_name, vocab_size=vocab_size))
    if device.type == "cpu":
        model.init_weights(0)
    else:
        _init_on_device(model)
    model = model.to(dtype=dtype).eval().requires_grad_(False)
    model.rebuild_buffers()
    return model


def _init_on_device(model: UIO2Model) -> None:
    """Random weights for big presets without a CPU copy (same distributions as init_weights)."""
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "scale" or (leaf == "weight" and p.ndim == 1):
            p.data.fill_(1.0)
        elif leaf == "bias" or leaf.endswith("_bias"):
            p.data.zero_()
        elif leaf == "logit_scale":
            p.data.fill_(float(np.log(10.0)))
        elif leaf in ("modality_embedding", "class_embedding", "positional_embedding"):
            p.data.normal_(0, 0.02)
        elif name == "text_token_embedder.weight":
            p.data.normal_(0, 1.0)
        else:
            p.data.normal_(0, p.shape[-1] ** -0.5)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def write_json(result: dict, path: str | Path) -> None:
    """Atomic write: a temp file in the same directory, then rename."""
    atomic_write_json(path, result)


def format_table(r: dict) -> str:
    lines = [f"UIO2 {r['preset']} [{r['path']}] on {r['device']}, {r['dtype']}, batch {r['batch']}, "
             f"{r['iters']} iterations (+{r['warmup']} warm-up)",
             f"{'stage':<14} {'p50 ms':>10} {'p90 ms':>10} {'p99 ms':>10}"]
    for s in STAGES:
        v = r[f"{s}_ms"]
        lines.append(f"{s:<14} {v['p50']:>10.2f} {v['p90']:>10.2f} {v['p99']:>10.2f}")
    lines.append(f"tokens/s {r['tokens_per_s']:.1f}   decode {r['decode_gbps']:.2f} GB/s "
                 f"({r['decode_bytes_per_token'] / 1e6:.1f} MB per token)   peak memory {r['peak_mem_mb']:.0f} MB")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="uio-robot bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny", choices=["tiny", "large", "xl", "xxl"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--plain", action="store_true", help="time the plain path instead of the fast one")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="auto: bfloat16 on a GPU, float32 on a CPU")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--vocab-size", type=int, default=None,
                   help="text vocabulary (default: 1536 for tiny, which ships a small tokenizer; 33280 otherwise)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    p.add_argument("--no-prefetch", action="store_true",
                   help="fast path: compute the newest history frame inside the next action step instead")
    p.add_argument("--json", default=None, help="write the results here as JSON")
    args = p.parse_args(argv)
    if args.batch < 1 or args.iters < 1 or args.warmup < 0:
        p.error("--batch and --iters must be >= 1, --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(
        args.dtype, torch.bfloat16 if device.type == "cuda" else torch.float32)
    vocab = args.vocab_size or (1536 if args.preset == "tiny" else None)
    from tqdm import tqdm
    bar = tqdm(total=args.warmup + args.iters, desc=f"bench {args.preset}", leave=False)
    result = run(args.preset, args.batch, args.plain, device, dtype, args.iters, args.warmup, vocab,
                 prefetch=not args.no_prefetch, progress=lambda s: bar.update(1))
    bar.close()
    print(format_table(result))
    if args.json:
        write_json(result, args.json)
    return 0
