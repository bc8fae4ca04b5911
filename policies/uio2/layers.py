"""Building blocks of the UIO2 transformers: RMS norm, rotary tables, attention with QK-norm, MLP.

Numerics follow the reference port: norms, rotary and attention logits in float32 whatever the weight
dtype, masking by adding -1e10 (so a fully masked row is a uniform average instead of NaN).
Tensors inside attention are laid out [batch, heads, length, head_dim].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MASKED = -1e10  # additive attention bias of a masked key, as the reference uses


class RMSNorm(nn.Module):
    """Scale-only RMS norm (T5 / UIO2 "layer norm"), computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt((x * x).mean(-1, keepdim=True) + self.eps)
        return self.scale.to(dtype) * x.to(dtype)


# ---- rotary position tables ---------------------------------------------------------------------
# A table row holds, per rotation pair j, (cos a_j, sin a_j) interleaved: [cos a0, sin a0, cos a1, ...].

def rope_1d(length: int, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """[length, head_dim] table for positions 0..length-1."""
    theta = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(torch.arange(length).float(), theta)
    return torch.stack([angles.cos(), angles.sin()], -1).reshape(length, head_dim)


def rope_2d(rows: int, cols: int, head_dim: int, scale: float = 1.0, base: float = 10000.0) -> torch.Tensor:
    """[rows*cols, head_dim] table for a row-major grid: first half rotates by row, second by column."""
    half = head_dim // 2
    theta = 1.0 / (base ** (torch.arange(0, half, 2, dtype=torch.float32) / half))
    r = torch.arange(rows, dtype=torch.float32) * scale
    c = torch.arange(cols, dtype=torch.float32) * scale
    coords = torch.stack(torch.meshgrid(r, c, indexing="ij"), -1).reshape(rows * cols, 2)
    angles = torch.cat([torch.outer(coords[:, 0], theta), torch.outer(coords[:, 1], theta)], -1)
    return torch.stack([angles.cos(), angles.sin()], -1).reshape(rows * cols, head_dim)


def apply_rotary(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of x [B, H, L, D] by table rows [B or 1, L, D] (float32 math)."""
    xs = x.float().unflatten(-1, (-1, 2))
    t = table.float().unflatten(-1, (-1, 2)).unsqueeze(1)  # [B, 1, L, D/2, 2]
    cos, sin = t[..., 0], t[..., 1]
    x0, x1 = xs[..., 0], xs[..., 1]
    return torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], -1).flatten(-2).to(x.dtype)


# ---- masks --------------------------------------------------------------------------------------

def attention_bias(q_mask: torch.Tensor | None, k_mask: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """Additive float32 bias [B, 1, Lq, Lk]: 0 where query and key are valid (and key <= query if causal)."""
    ok = k_mask[:, None, :] > 0
    if q_mask is not None:
        ok = ok & (q_mask[:, :, None] > 0)
    if causal:
        n = k_mask.shape[1]
        ok = ok & torch.ones(n, n, dtype=torch.bool, device=k_mask.device).tril()
    bias = torch.zeros(ok.shape, dtype=torch.float32, device=k_mask.device).masked_fill_(~ok, MASKED)
    return bias.unsqueeze(1)


def dot_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
                  clip: float | None = None) -> torch.Tensor:
    """softmax(q k^T + bias) v with float32 logits; q is already scaled. Returns [B, H, Lq, D]."""
    logits = torch.matmul(q.float(), k.float().transpose(-1, -2))
    if clip:
        logits = logits.clamp(-clip, clip)
    if bias is not None:
        logits = logits + bias
    return torch.matmul(logits.softmax(-1).to(v.dtype), v)


class Attention(nn.Module):
    """Multi-head attention without biases, optional per-head QK RMS norm and rotary on q / k.

    Split into `project_q`, `project_kv` and `attend` so that a decoder can compute the cross-attention
    keys/values once per request and keep self-attention keys/values in a cache.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, qk_norm: bool = True,
                 scaled_cosine: bool = False, clip_logit: float | None = None):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        inner = num_heads * head_dim
        self.query = nn.Linear(dim, inner, bias=False)
        self.key = nn.Linear(dim, inner, bias=False)
        self.value = nn.Linear(dim, inner, bias=False)
        self.out = nn.Linear(inner, dim, bias=False)
        self.qk_norm = qk_norm
        if qk_norm:
            self.query_norm = RMSNorm(head_dim)
            self.key_norm = RMSNorm(head_dim)
        self.scaled_cosine = scaled_cosine
        if scaled_cosine:  # XXL's resampler: cosine similarity times a learned per-head temperature
            self.logit_scale = nn.Parameter(torch.full((num_heads,), math.log(10.0)))
        self.clip_logit = clip_logit

    def _heads(self, x: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        return proj(x).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def project_q(self, x: torch.Tensor, rope: torch.Tensor | None = None) -> torch.Tensor:
        q = self._heads(x, self.query)
        if self.qk_norm:
            q = self.query_norm(q)
        if rope is not None:
            q = apply_rotary(q, rope)
        if self.scaled_cosine:
            scale = self.logit_scale.float().clamp(max=math.log(100.0)).exp().view(-1, 1, 1)
            return F.normalize(q.float(), dim=-1) * scale
        return q.float() / math.sqrt(self.head_dim)

    def project_kv(self, x: torch.Tensor, rope: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        k = self._heads(x, self.key)
        if self.qk_norm:
            k = self.key_norm(k)
        if rope is not None:
            k = apply_rotary(k, rope)
        if self.scaled_cosine:
            k = F.normalize(k.float(), dim=-1)
        return k, self._heads(x, self.value)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               bias: torch.Tensor | None) -> torch.Tensor:
        y = dot_attention(q, k, v, bias, self.clip_logit)
        return self.out(y.transpose(1, 2).flatten(2))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                q_rope: torch.Tensor | None = None, k_rope: torch.Tensor | None = None) -> torch.Tensor:
        k, v = self.project_kv(x if context is None else context, k_rope)
        return self.attend(self.project_q(x, q_rope), k, v, bias)


_ACTIVATION = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu, "linear": lambda x: x}


class MLP(nn.Module):
    """Bias-free MLP: the product of one activated projection per activation (gated when two), then wo.

    One activation gives `wi`; several give `wi_0`, `wi_1`, ... (the reference's names).
    """

    def __init__(self, dim: int, hidden: int, activations: list[str]):
        super().__init__()
        self.activations = list(activations)
        names = ["wi"] if len(self.activations) == 1 else [f"wi_{i}" for i in range(len(self.activations))]
        self.names = names
        for name in names:
            self.add_module(name, nn.Linear(dim, hidden, bias=False))
        self.wo = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = None
        for name, act in zip(self.names, self.activations):
            a = _ACTIVATION[act](getattr(self, name)(x))
            h = a if h is None else h * a
        return self.wo(h)
