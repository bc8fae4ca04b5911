"""`uio-robot uio2-dump`: write this implementation's preprocessing and network tensors for checking.

The output has every key of the reference set's preprocessed.safetensors and expected.safetensors
(float32, same names), so another vector set of the same format can be compared key by key:

    uio-robot uio2-dump --model DIR --tokenizer FILE --raw DIR --out ours.safetensors
    uio-robot uio2-dump --model DIR --preprocessed preprocessed.safetensors --out ours.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy

from uio_robot.common.atomic import atomic_path
from uio_robot.policies.uio2.checkpoint import CheckpointError, load_model
from uio_robot.policies.uio2.config import UIO2ConfigError
from uio_robot.policies.uio2.generate import generate
from uio_robot.policies.uio2.model import UIO2Model, to_batch

DEFAULT_GENERATION = {"max_new_tokens": 12, "min_new_tokens": 12, "do_sample": False,
                      "bos_token_id": 0, "eos_token_id": 1}
TOP_K = 5


def preprocess_raw(model: UIO2Model, tokenizer_path: Path, raw_dir: Path) -> tuple[dict, dict]:
    """raw.json + images -> the batched preprocessed arrays, and raw.json's generation settings."""
    from uio_robot.policies.uio2.preprocess import build_batch, preprocess_example
    from uio_robot.policies.uio2.tokenizer import UIO2Tokenizer

    raw = json.loads((raw_dir / "raw.json").read_text())
    tokenizer = UIO2Tokenizer(tokenizer_path)
    t = model.config.t5_config
    examples = []
    for i, ex in enumerate(raw.get("examples") or []):
        if ex.get("target_modality", "text") != "text":
            raise ValueError(f"raw.json example {i}: only text targets are supported")
        history = ex.get("image_history")
        examples.append(preprocess_example(
            tokenizer, ex["text_inputs"],
            image=raw_dir / ex["image"] if ex.get("image") else None,
            image_history=[raw_dir / p for p in history] if history else None,
            text_targets=ex.get("text_targets"), num_frames=model.config.num_frames,
            image_size=t.default_image_vit_size[0], history_size=t.default_image_history_vit_size[0]))
    if not examples:
        raise ValueError(f"{raw_dir / 'raw.json'}: no examples")
    return build_batch(examples), raw.get("generation", {})


@torch.no_grad()
def run_network(model: UIO2Model, arrays: dict[str, np.ndarray], settings: dict) -> dict[str, torch.Tensor]:
    """Every expected.safetensors tensor this network produces for the batch `arrays`."""
    batch = to_batch(arrays, model.device)
    capture: dict[str, torch.Tensor] = {}
    if "targets/text/inputs" in batch:
        logits = model(batch, capture)
        targets = batch["targets/text/targets"].long()
        capture["text_logits"] = logits
        capture["text_token_loss"] = F.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)
        encoded = None
    else:
        encoded = model.encode(batch, capture)
    gen = {**DEFAULT_GENERATION, **settings}
    out = generate(model, batch, encoded=encoded, max_new_tokens=int(gen["max_new_tokens"]),
                   min_new_tokens=int(gen.get("min_new_tokens") or 0), do_sample=bool(gen.get("do_sample")),
                   temperature=float(gen.get("temperature", 1.0)), top_p=float(gen.get("top_p", 1.0)),
                   return_top_k=TOP_K, bos_id=int(gen["bos_token_id"]), eos_id=int(gen["eos_token_id"]),
                   generator=torch.Generator(model.device).manual_seed(int(gen.get("seed", 0))))
    capture.update({"generation/tokens": out.tokens, "generation/top5_ids": out.top_ids,
                    "generation/top5_scores": out.top_scores})
    return capture


def write_atomic(tensors: dict[str, np.ndarray], path: Path) -> None:
    with atomic_path(path) as tmp:
        save_numpy(tensors, str(tmp))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uio-robot uio2-dump", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help="checkpoint directory (config.json + weights)")
    p.add_argument("--tokenizer", type=Path, help="SentencePiece model file (needed with --raw)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--raw", type=Path, help="directory with raw.json and the images it names")
    src.add_argument("--preprocessed", type=Path, help="preprocessed.safetensors to feed the network")
    p.add_argument("--out", required=True, type=Path, help="output .safetensors file")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--dtype", default="float32", help="float32 (default), bfloat16 or float16")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.raw is not None and args.tokenizer is None:
            raise ValueError("--raw needs --tokenizer")
        model = load_model(args.model, dtype=args.dtype, device=args.device)
        if args.raw is not None:
            arrays, settings = preprocess_raw(model, args.tokenizer, args.raw)
        else:
            arrays = {k.lstrip("/"): v for k, v in load_numpy(str(args.preprocessed)).items()}
            raw_json = args.preprocessed.parent / "raw.json"
            settings = json.loads(raw_json.read_text()).get("generation", {}) if raw_json.is_file() else {}
        outputs = run_network(model, arrays, settings)
    except (CheckpointError, UIO2ConfigError, SafetensorError, ValueError, KeyError, OSError) as exc:
        print(f"uio-robot uio2-dump: error: {exc}", file=sys.stderr)
        return 1
    tensors = {k: np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for k, v in arrays.items()}
    tensors.update({k: v.detach().float().cpu().contiguous().numpy() for k, v in outputs.items()})
    write_atomic(tensors, args.out)
    print(f"wrote {len(tensors)} tensors to {args.out}")
    return 0
