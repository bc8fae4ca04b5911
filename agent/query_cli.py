"""`uio-robot query`: ask the model a question about an image file.

    uio-robot query --image scene.png --question "what colour is the cube?" [policy.checkpoint=DIR]
                    [policy.device=cpu] [policy.dtype=float32]

Prints the answer. When the answer is a location (a "where is ..." question, or a box), it also prints
the point or box in pixels of the given image (x from the left edge, y from the top edge).
The model is the shipped default unless `policy.checkpoint` names another.
"""

from __future__ import annotations

import argparse

from .config import load_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uio-robot query", description=__doc__.split("\n\n")[0],
                                epilog="Other arguments are config overrides such as policy.checkpoint=DIR.")
    p.add_argument("--image", required=True, help="image file (PNG/JPEG)")
    p.add_argument("--question", required=True, help="the question or instruction, e.g. 'where is the red ball?'")
    p.add_argument("--max-tokens", type=int, default=32, help="longest answer in tokens (default 32)")
    return p


def main(argv: list[str]) -> int:
    args, overrides = _parser().parse_known_args(argv)
    from uio_robot.policies.factory import resolve_checkpoint
    from uio_robot.policies.uio2.preprocess import load_image
    from uio_robot.policies.uio2_policy import UIO2Policy

    cfg = load_config(overrides)
    image = load_image(args.image, "--image")
    policy = UIO2Policy(resolve_checkpoint(cfg.policy.checkpoint), device=cfg.policy.device,
                        dtype=cfg.policy.dtype)
    result = policy.ground({policy.format.camera: image}, args.question, max_new_tokens=args.max_tokens)
    print(f"Q: {args.question}")
    print(f"A: {result.answer}")
    h, w = image.shape[:2]
    if result.point is not None:
        x, y = result.point
        print(f"point (x, y) in pixels of the {w}x{h} image: ({x:.1f}, {y:.1f})")
    if result.box is not None:
        x0, y0, x1, y1 = result.box
        print(f"box (x0, y0, x1, y1) in pixels of the {w}x{h} image: ({x0:.1f}, {y0:.1f}, {x1:.1f}, {y1:.1f})")
    return 0
