"""Fused-attention forward passes of the UIO2 encoder and ViT, reading the plain model's own weights.

The plain modules (layers.py, vision.py) follow the reference literally: float32 logits materialised as
[B, H, L, L], an additive [B, 1, L, L] bias that masks queries and keys, rotary as stacked pairs. These
functions compute the same function faster:
- `scaled_dot_product_attention` (flash / memory-efficient kernels, no [L, L] tensor in memory);
- a key-only mask [B, 1, 1, L]: masking padded queries as well changes only padded rows, which every
  consumer masks again (keys of the cross-attention), so valid outputs are unchanged;
- rotary as one complex multiply with a table converted once per request and shared by all layers.
Norms and rotary still run in float32, as in the plain path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from uio_robot.policies.uio2.layers import Attention
from uio_robot.policies.uio2.model import Encoder
from uio_robot.policies.uio2.vision import VisionTransformer


def rope_complex(table: torch.Tensor) -> torch.Tensor:
    """Interleaved (cos, sin) rotary rows [..., D] -> complex rotations [..., D/2]."""
    return torch.view_as_complex(table.float().unflatten(-1, (-1, 2)).contiguous())


def rotate(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotary on x [B, H, L, D] with complex rows rope [B or 1, L, D/2] (float32 math)."""
    xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(xc * rope.unsqueeze(1)).flatten(-2).to(x.dtype)


def heads(attn: Attention, x: torch.Tensor, proj: torch.nn.Linear) -> torch.Tensor:
    return proj(x).unflatten(-1, (attn.num_heads, attn.head_dim)).transpose(1, 2)


def query(attn: Attention, x: torch.Tensor, rope: torch.Tensor | None) -> torch.Tensor:
    """Unscaled rotated query heads (the 1/sqrt(head_dim) goes to the attention kernel)."""
    q = heads(attn, x, attn.query)
    if attn.qk_norm:
        q = attn.query_norm(q)
    return q if rope is None else rotate(q, rope)


def key_value(attn: Attention, x: torch.Tensor, rope: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    k = heads(attn, x, attn.key)
    if attn.qk_norm:
        k = attn.key_norm(k)
    return (k if rope is None else rotate(k, rope)), heads(attn, x, attn.value)


def attend(attn: Attention, q, k, v, mask: torch.Tensor | None) -> torch.Tensor:
    """Fused attention + out projection; `mask` is bool, True where a key may be attended to."""
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.head_dim ** -0.5)
    return attn.out(y.transpose(1, 2).flatten(2))


def attend_one(attn: Attention, q, k, v, mask: torch.Tensor) -> torch.Tensor:
    """Attention of single-token queries (a decode step): explicit float32 logits, as the plain path.

    For one query the logits are tiny ([B, H, 1, L]); the fused CPU kernel is slower here than two
    matmuls, and on a GPU the whole step is one CUDA graph anyway.
    """
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * attn.head_dim ** -0.5
    probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    y = torch.matmul(probs.to(v.dtype), v)
    return attn.out(y.transpose(1, 2).flatten(2))


def check_supported(attn: Attention, where: str) -> None:
    """The fused path has no logit clipping and no scaled-cosine attention (the encoder/decoder never use them)."""
    if attn.scaled_cosine or attn.clip_logit:
        raise ValueError(f"{where}: scaled-cosine / clipped attention is not supported by the fast path")


def encoder_forward(encoder: Encoder, x: torch.Tensor, key_mask: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """The encoder stack: x [B, L, D], key_mask bool [B, L], rope complex [B, L, D_head/2]."""
    mask = key_mask[:, None, None, :]
    for i in range(encoder.num_layers):
        layer = getattr(encoder, f"layers_{i}")
        h = layer.pre_attention_norm(x)
        a = layer.attention
        x = x + attend(a, query(a, h, rope), *key_value(a, h, rope), mask)
        x = x + layer.mlp(layer.pre_mlp_norm(x))
    return encoder.encoder_norm(x)


def vit_forward(vit: VisionTransformer, patches: torch.Tensor, mask: torch.Tensor, pos_ids: torch.Tensor,
                grid_table: torch.Tensor, want_second: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ViT over patches [N, P, 3*ps*ps]: (last block, second block or None), class token dropped.

    `grid_table` is `vit.grid_positions(grid)`, computed once by the caller (the plain path resizes the
    learned position grid on every call).
    """
    n = patches.shape[0]
    x = vit.embedding(patches)
    cls = vit.class_embedding.to(x.dtype).expand(n, 1, -1)
    pos = torch.cat([vit.positional_embedding[:1].float().expand(n, 1, -1), grid_table[pos_ids.long()]], 1)
    x = vit.pre_ln(torch.cat([cls, x], 1) + pos.to(x.dtype))
    valid = torch.cat([torch.ones_like(mask[:, :1]), mask], 1) > 0
    attn_mask = valid[:, None, None, :]
    second = None
    for i, block in enumerate(vit.transformer.resblocks):
        a = block.attn
        h = block.ln_1(x)
        qkv = [F.linear(h, getattr(a, f"{name}_in_proj_weight"), getattr(a, f"{name}_in_proj_bias"))
               .unflatten(-1, (a.num_heads, a.head_dim)).transpose(1, 2) for name in ("query", "key", "value")]
        y = F.scaled_dot_product_attention(*qkv, attn_mask=attn_mask, scale=a.head_dim ** -0.5)
        x = x + a.out_proj(y.transpose(1, 2).flatten(2))
        x = x + block.mlp(block.ln_2(x))
        if i == 1 and want_second:
            second = x[:, 1:]
    return x[:, 1:], second


def logits(table: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Tied output layer in float32: hidden @ table^T / sqrt(d_model)."""
    return (hidden @ table.T).float() / math.sqrt(hidden.shape[-1])
