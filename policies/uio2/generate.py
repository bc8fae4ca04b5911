"""Autoregressive text generation with the UIO2 decoder.

The encoder runs once, the cross-attention keys/values are computed once per request, and each step
feeds one token through the decoder with per-layer self-attention KV caches. Decoding is greedy or
sampled (temperature, top-p), optionally constrained to an allowed-token set per step (how actions are
forced onto location tokens). A `between_steps` hook runs between steps so that a caller (the runtime's
inference worker) can serve urgent work while a long query decodes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from uio_robot.policies.uio2.model import Encoded, UIO2Model

# Per step: a callable (step, tokens so far [B, step+1]) -> ids allowed for every row (a sequence or 1-D
# tensor) or a bool mask [V] / [B, V]; or a list with one id collection per step.
AllowedTokens = Callable[[int, torch.Tensor], "Sequence[int] | torch.Tensor"] | Sequence[Sequence[int]]


@dataclass
class GenerationOutput:
    tokens: torch.Tensor  # [B, 1 + steps]: BOS, then generated ids; pad after a row's EOS
    lengths: torch.Tensor  # [B] generated ids per row, EOS included
    top_ids: torch.Tensor | None = None  # [B, steps, k] best ids per step (after EOS / constraint masking)
    top_scores: torch.Tensor | None = None  # [B, steps, k] their logits


@torch.no_grad()
def generate(model: UIO2Model, batch: Mapping[str, torch.Tensor] | None = None, *,
             encoded: Encoded | None = None, max_new_tokens: int = 32, min_new_tokens: int = 0,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
             allowed_tokens: AllowedTokens | None = None, return_top_k: int = 0,
             between_steps: Callable[[int], None] | None = None, generator: torch.Generator | None = None,
             bos_id: int = 0, eos_id: int = 1, pad_id: int = 0) -> GenerationOutput:
    """Generate up to `max_new_tokens` ids per example of `batch` (or of an already `encoded` batch)."""
    max_text = model.config.t5_config.decoder_max_text_length
    if not 1 <= max_new_tokens < max_text:
        raise ValueError(f"max_new_tokens must be in [1, {max_text - 1}], got {max_new_tokens}")
    if do_sample and (temperature <= 0 or not 0 < top_p <= 1):
        raise ValueError(f"sampling needs temperature > 0 and top_p in (0, 1], got {temperature}, {top_p}")
    if encoded is None:
        if batch is None:
            raise ValueError("generate needs a batch or an encoded batch")
        encoded = model.encode(batch)
    b, device = encoded.hidden.shape[0], encoded.hidden.device
    cross_kv = model.cross_kv(encoded)
    caches = model.new_caches(b, max_new_tokens)
    tokens = torch.full((b, 1), bos_id, dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    lengths = torch.zeros(b, dtype=torch.long, device=device)
    top_ids, top_scores = [], []
    for step in range(max_new_tokens):
        if step and between_steps is not None:
            between_steps(step)
        positions = torch.full((b, 1), step, dtype=torch.long, device=device)
        hidden = model.decode(tokens[:, -1:], positions, encoded, cross_kv=cross_kv, caches=caches)
        scores = model.logits(hidden[:, -1]).float()
        if step < min_new_tokens:
            scores[:, eos_id] = float("-inf")
        if allowed_tokens is not None:
            scores = _constrain(scores, allowed_tokens, step, tokens)
        if return_top_k:
            best = scores.topk(return_top_k, dim=-1)
            top_ids.append(best.indices)
            top_scores.append(best.values)
        if do_sample:
            next_ids = _sample(scores, temperature, top_p, generator)
        else:
            next_ids = scores.argmax(-1)
        next_ids = torch.where(done, torch.full_like(next_ids, pad_id), next_ids)
        lengths += (~done).long()
        tokens = torch.cat([tokens, next_ids[:, None]], 1)
        done |= next_ids == eos_id
        if bool(done.all()):
            break
    return GenerationOutput(tokens, lengths, torch.stack(top_ids, 1) if top_ids else None,
                            torch.stack(top_scores, 1) if top_scores else None)


def _constrain(scores: torch.Tensor, allowed: AllowedTokens, step: int, tokens: torch.Tensor) -> torch.Tensor:
    """Set every disallowed id's score to -inf; fail clearly when a row has nothing left."""
    ids = allowed(step, tokens) if callable(allowed) else allowed[min(step, len(allowed) - 1)]
    ids = torch.as_tensor(ids, device=scores.device)
    if ids.dtype == torch.bool:
        ok = ids.expand_as(scores)
    else:
        ok = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
        ok[ids.long()] = True
        ok = ok.expand_as(scores)
    scores = scores.masked_fill(~ok, float("-inf"))
    if bool(torch.isinf(scores).all(-1).any()):
        raise ValueError(f"constrained decoding: no allowed token left at step {step}")
    return scores


def _sample(scores: torch.Tensor, temperature: float, top_p: float, generator) -> torch.Tensor:
    """Sample from softmax(scores / temperature) restricted to the smallest set with mass >= top_p."""
    probs = (scores / temperature).softmax(-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(-1, descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p  # always keeps the best token
        sorted_probs = sorted_probs * keep
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
