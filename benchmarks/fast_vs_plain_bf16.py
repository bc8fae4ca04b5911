"""Do the fast and plain generation paths agree in bf16 on a random-weight UIO2 model of a given preset?

bf16 rounds differently in fused and unfused kernels, so exact token equality is not expected on random
weights (where the top two logits are often close). This script reports, for one batch of the bench's
setting (one image, two history frames, a 40-token prompt):
- greedy token agreement of the two paths over N constrained location tokens and N free tokens;
- the gap between the plain path's best and second-best score at every step, to tell a flipped
  near-tie from a real disagreement.

    python benchmarks/fast_vs_plain_bf16.py --preset large --tokens 8 [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from uio_robot.policies.uio2.bench import location_ids, random_batch
from uio_robot.policies.uio2.config import preset
from uio_robot.policies.uio2.fast import FastGenerator
from uio_robot.policies.uio2.generate import generate
from uio_robot.policies.uio2.model import UIO2Model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="large")
    p.add_argument("--tokens", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default="")
    args = p.parse_args()
    device, dtype = torch.device(args.device), torch.bfloat16
    torch.manual_seed(0)
    started = time.monotonic()
    with torch.device(device):
        model = UIO2Model(preset(args.preset))
    model.init_weights(0)
    model = model.to(dtype=dtype).eval().requires_grad_(False)
    model.rebuild_buffers()
    batch = {k: v.to(device) for k, v in random_batch(model, 1, 40, 2).items()}
    for k in ("inputs/image/input", "inputs/image_history/input"):
        batch[k] = batch[k].to(dtype)
    locations = location_ids(model.config.t5_config.vocab_size)
    fast = FastGenerator(model, max_batch=1, max_new_tokens=max(32, args.tokens), device=device, dtype=dtype)
    result = {"preset": args.preset, "dtype": "bfloat16", "device": str(device), "tokens": args.tokens}
    with torch.no_grad():
        for name, allowed in (("constrained", [locations] * args.tokens), ("free", None)):
            plain = generate(model, batch, max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                             allowed_tokens=allowed, return_top_k=2)
            quick = fast.generate(batch, max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                                  allowed_tokens=allowed)
            same = (plain.tokens[0, 1:] == quick.tokens[0, 1:]).float()
            first_diff = int((same == 0).nonzero()[0]) if bool((same == 0).any()) else None
            result[name] = {"agree": float(same.mean()), "first_difference_at": first_diff,
                            "plain": plain.tokens[0, 1:].tolist(), "fast": quick.tokens[0, 1:].tolist(),
                            # how close the plain path's best two scores were at each step (near-ties flip)
                            "top_gap": (plain.top_scores[0, :, 0] - plain.top_scores[0, :, 1]).float().tolist()}
    result["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
