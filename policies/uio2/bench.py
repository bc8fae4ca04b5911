"""`uio-robot bench`: time the UIO2 inference stages (CPU, the tiny preset with random weights).

Prints one table: per stage, the median and p90 wall time over the timed iterations. Stages: one
encoder pass (text + image + image history, ViT and perceiver included) and one decode step (a single
token through the decoder with the KV cache; the per-request cross-attention K/V are excluded).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from uio_robot.policies.uio2.config import preset
from uio_robot.policies.uio2.model import UIO2Model


def random_batch(model: UIO2Model, batch: int, prompt_len: int, frames_used: int, seed: int = 0) -> dict:
    """A synthetic batch of the model's input shapes: full image, `frames_used` history frames."""
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


def _times(fn, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


@torch.no_grad()
def run(args: argparse.Namespace) -> list[tuple[str, list[float]]]:
    model = UIO2Model(preset(args.preset, vocab_size=args.vocab_size)).init_weights(0).eval()
    batch = random_batch(model, args.batch, args.prompt_len, args.frames)
    rows = [("encoder pass", _times(lambda: model.encode(batch), args.warmup, args.iters))]
    encoded = model.encode(batch)
    cross_kv = model.cross_kv(encoded)
    rows.append(("cross K/V (once per request)", _times(lambda: model.cross_kv(encoded), args.warmup, args.iters)))
    steps = args.decode_tokens

    def decode_all():
        caches = model.new_caches(args.batch, steps)
        token = torch.zeros(args.batch, 1, dtype=torch.long)
        for step in range(steps):
            pos = torch.full((args.batch, 1), step)
            hidden = model.decode(token, pos, encoded, cross_kv=cross_kv, caches=caches)
            token = model.logits(hidden[:, -1]).argmax(-1, keepdim=True)

    per_token = [t / steps for t in _times(decode_all, max(1, args.warmup // 2), max(1, args.iters // 2))]
    rows.append((f"decode step (mean of {steps})", per_token))
    return rows


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="uio-robot bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny", choices=["tiny", "large", "xl", "xxl"])
    p.add_argument("--vocab-size", type=int, default=1536, help="text vocabulary (tiny ships a small one)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt-len", type=int, default=48)
    p.add_argument("--frames", type=int, default=2, help="history frames in use")
    p.add_argument("--decode-tokens", type=int, default=32)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args)
    print(f"UIO2 {args.preset} on CPU ({torch.get_num_threads()} threads), batch {args.batch}, "
          f"prompt {args.prompt_len} tokens, {args.frames} history frames")
    print(f"{'stage':<32} {'median ms':>10} {'p90 ms':>10}")
    for name, times in rows:
        ms = sorted(t * 1e3 for t in times)
        p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
        print(f"{name:<32} {statistics.median(ms):>10.2f} {p90:>10.2f}")
    return 0
