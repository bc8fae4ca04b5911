"""The UIO2 encoder-decoder: input embedders, encoder, decoder with cross-attention, tied text logits.

Batches are dicts of tensors under the reference's preprocessed keys (`inputs/text/tokens`,
`inputs/image/input`, `inputs/image_history/input`, ..., `targets/text/inputs`); image and history are
optional. Passing a `capture` dict collects the intermediate tensors under the reference's
expected.safetensors names (`image/vit_last`, `encoder/hidden`, ...), which is how the test vectors are
checked and dumped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from uio_robot.policies.uio2.config import T5Config, UIO2Config
from uio_robot.policies.uio2.layers import MLP, Attention, RMSNorm, attention_bias, rope_1d
from uio_robot.policies.uio2.vision import Capture, HistoryEmbedder, ImageEmbedder


class TextEmbedder(nn.Module):
    """Token-table row + the modality embedding; rotary rows looked up by position."""

    def __init__(self, t: T5Config, max_length: int):
        super().__init__()
        self.modality_embedding = nn.Parameter(torch.zeros(t.emb_dim))
        self.max_length, self.head_dim = max_length, t.head_dim
        self.register_buffer("rope", self.rope_table(), persistent=False)

    def rope_table(self) -> torch.Tensor:
        return rope_1d(self.max_length, self.head_dim)

    def forward(self, tokens, table: nn.Embedding, positions):
        if int(positions.max()) >= self.max_length:
            raise ValueError(f"text position {int(positions.max())} beyond the model's {self.max_length}")
        x = table(tokens.long())
        return x + self.modality_embedding.to(x.dtype), self.rope[positions.long()]


class EncoderLayer(nn.Module):
    def __init__(self, t: T5Config):
        super().__init__()
        self.pre_attention_norm = RMSNorm(t.emb_dim)
        self.attention = Attention(t.emb_dim, t.num_heads, t.head_dim, t.qk_norm)
        self.pre_mlp_norm = RMSNorm(t.emb_dim)
        self.mlp = MLP(t.emb_dim, t.mlp_dim, t.mlp_activations)

    def forward(self, x, bias, rope):
        x = x + self.attention(self.pre_attention_norm(x), None, bias, rope, rope)
        return x + self.mlp(self.pre_mlp_norm(x))


class Encoder(nn.Module):
    def __init__(self, t: T5Config):
        super().__init__()
        self.num_layers = t.num_encoder_layers
        for i in range(self.num_layers):
            self.add_module(f"layers_{i}", EncoderLayer(t))
        self.encoder_norm = RMSNorm(t.emb_dim)

    def forward(self, x, mask, rope):
        bias = attention_bias(mask, mask)
        for i in range(self.num_layers):
            x = getattr(self, f"layers_{i}")(x, bias, rope)
        return self.encoder_norm(x)


class KVCache:
    """Self-attention keys/values of one decoder layer, preallocated to the longest decode."""

    def __init__(self, batch: int, heads: int, max_length: int, head_dim: int, dtype, device):
        self.k = torch.zeros(batch, heads, max_length, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        if end > self.k.shape[2]:
            raise ValueError(f"KV cache full: {end} > {self.k.shape[2]} positions")
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class DecoderLayer(nn.Module):
    def __init__(self, t: T5Config, cross_attention: bool):
        super().__init__()
        self.pre_self_attention_norm = RMSNorm(t.emb_dim)
        self.self_attention = Attention(t.emb_dim, t.num_heads, t.head_dim, t.qk_norm)
        self.has_cross = cross_attention
        if cross_attention:
            self.pre_cross_attention_norm = RMSNorm(t.emb_dim)
            self.encoder_decoder_attention = Attention(t.emb_dim, t.num_heads, t.head_dim, t.qk_norm)
        self.pre_mlp_norm = RMSNorm(t.emb_dim)
        self.mlp = MLP(t.emb_dim, t.mlp_dim, t.mlp_activations)

    def forward(self, x, rope, self_bias, cross_kv, cross_bias, cache: KVCache | None = None):
        attn = self.self_attention
        h = self.pre_self_attention_norm(x)
        k, v = attn.project_kv(h, rope)
        if cache is not None:
            k, v = cache.append(k, v)
        x = x + attn.attend(attn.project_q(h, rope), k, v, self_bias)
        if self.has_cross:
            xattn = self.encoder_decoder_attention
            q = xattn.project_q(self.pre_cross_attention_norm(x), rope)
            x = x + xattn.attend(q, *cross_kv, cross_bias)
        return x + self.mlp(self.pre_mlp_norm(x))


class Decoder(nn.Module):
    def __init__(self, t: T5Config):
        super().__init__()
        n = self.num_layers = t.num_decoder_layers
        for i in range(n):
            cross = i % t.decoder_xattention_internval == 0 or i == n - 1
            self.add_module(f"layers_{i}", DecoderLayer(t, cross))
        self.decoder_norm = RMSNorm(t.emb_dim)

    def layers(self) -> list[DecoderLayer]:
        return [getattr(self, f"layers_{i}") for i in range(self.num_layers)]


@dataclass
class Encoded:
    """Encoder output of one batch and what the decoder needs of it."""

    hidden: torch.Tensor  # [B, L, D]
    mask: torch.Tensor  # [B, L] int
    rope: torch.Tensor  # [B, L, head_dim]


class UIO2Model(nn.Module):
    def __init__(self, config: UIO2Config):
        super().__init__()
        config.validate()
        self.config = config
        t = config.t5_config
        self.text_token_embedder = nn.Embedding(t.vocab_size, t.emb_dim)
        self.input_embedders = nn.ModuleDict({
            "text": TextEmbedder(t, t.encoder_max_text_length),
            "image": ImageEmbedder(config),
            "image_history": HistoryEmbedder(config),
        })
        self.target_embedders = nn.ModuleDict({"text": TextEmbedder(t, t.decoder_max_text_length)})
        self.encoder = Encoder(t)
        self.decoder = Decoder(t)

    # ---- housekeeping ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.text_token_embedder.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.text_token_embedder.weight.dtype

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> UIO2Model:
        """Random initialization for training from scratch, tests and benchmarks.

        Projections ~ N(0, 1/fan_in), the token table ~ N(0, 1) (logits divide by sqrt(d)), norms at
        one, biases at zero, modality / class / position embeddings ~ N(0, 0.02^2).
        """
        g = torch.Generator().manual_seed(seed)

        def normal_(p: torch.Tensor, std: float) -> None:
            p.copy_(torch.randn(p.shape, generator=g) * std)

        for name, p in self.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("scale",) or (leaf == "weight" and p.ndim == 1):
                p.fill_(1.0)
            elif leaf == "logit_scale":
                p.fill_(math.log(10.0))
            elif leaf == "bias" or leaf.endswith("_bias"):
                p.zero_()
            elif leaf in ("modality_embedding", "class_embedding", "positional_embedding"):
                normal_(p, 0.02)
            elif name == "text_token_embedder.weight":
                normal_(p, 1.0)
            else:  # linear weights [out, in] and the perceiver latents [n, d]
                normal_(p, p.shape[-1] ** -0.5)
        return self

    def rebuild_buffers(self) -> None:
        """Recompute the (non-persistent) rotary tables, e.g. after building on the meta device."""
        for module in self.modules():
            if hasattr(module, "rope_table"):
                module.rope = module.rope_table().to(self.device)

    # ---- encoder ---------------------------------------------------------------------------------
    def embed_inputs(self, batch: Mapping[str, torch.Tensor], capture: Capture = None):
        """Concatenate text, image and image-history embeddings (that order) with masks and rope rows."""
        emb = self.input_embedders
        tokens = batch["inputs/text/tokens"]
        mask = batch.get("inputs/text/mask", (tokens > 0).to(torch.int32))
        positions = batch.get("inputs/text/pos_ids")
        if positions is None:
            positions = torch.arange(tokens.shape[1], device=tokens.device).expand(tokens.shape[0], -1)
        x, rope = emb["text"](tokens, self.text_token_embedder, positions)
        parts = [(x, mask, rope)]
        if capture is not None:
            capture["text/embed"] = x
        if "inputs/image/input" in batch:
            parts.append(emb["image"](batch["inputs/image/input"].to(self.dtype), batch["inputs/image/mask"],
                                      batch["inputs/image/pos_ids"], capture))
        if "inputs/image_history/input" in batch:
            parts.append(emb["image_history"](
                batch["inputs/image_history/input"].to(self.dtype), batch["inputs/image_history/mask"],
                batch["inputs/image_history/pos_ids"], emb["image"].image_encoder, capture))
        return tuple(torch.cat(p, 1) for p in zip(*parts))

    def encode(self, batch: Mapping[str, torch.Tensor], capture: Capture = None) -> Encoded:
        x, mask, rope = self.embed_inputs(batch, capture)
        hidden = self.encoder(x, mask, rope)
        if capture is not None:
            capture.update({"encoder/hidden": hidden, "encoder/mask": mask, "encoder/position_embed": rope})
        return Encoded(hidden, mask, rope)

    # ---- decoder ---------------------------------------------------------------------------------
    def cross_kv(self, encoded: Encoded) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """Per decoder layer, the cross-attention keys/values of the encoder output (computed once)."""
        return [layer.encoder_decoder_attention.project_kv(encoded.hidden, encoded.rope)
                if layer.has_cross else None for layer in self.decoder.layers()]

    def decode(self, tokens: torch.Tensor, positions: torch.Tensor, encoded: Encoded,
               cross_kv=None, token_mask: torch.Tensor | None = None,
               caches: list[KVCache] | None = None, capture: Capture = None) -> torch.Tensor:
        """Decoder hidden states (after the final norm) for `tokens` at target `positions`.

        Without caches: teacher forcing with causal self-attention masked by `token_mask`.
        With caches: the new tokens attend to everything cached before them (incremental decoding).
        """
        x, rope = self.target_embedders["text"](tokens, self.text_token_embedder, positions)
        if cross_kv is None:
            cross_kv = self.cross_kv(encoded)
        if caches is None:
            if token_mask is None:
                token_mask = torch.ones_like(tokens, dtype=torch.int32)
            self_bias = attention_bias(token_mask, token_mask, causal=True)
        else:
            self_bias = None
            if tokens.shape[1] > 1:  # a multi-token step must still be causal among its own tokens
                n, past = tokens.shape[1], caches[0].length
                ok = torch.ones(n, past + n, dtype=torch.bool, device=tokens.device).tril(past)
                self_bias = torch.zeros(ok.shape, device=tokens.device).masked_fill_(~ok, -1e10)
        q_mask = token_mask if caches is None else torch.ones_like(tokens, dtype=torch.int32)
        cross_bias = attention_bias(q_mask, encoded.mask)
        for i, layer in enumerate(self.decoder.layers()):
            x = layer(x, rope, self_bias, cross_kv[i], cross_bias, None if caches is None else caches[i])
        x = self.decoder.decoder_norm(x)
        if capture is not None:
            capture.update({"decoder/hidden": x, "decoder/position_embed": rope})
        return x

    def new_caches(self, batch: int, max_length: int) -> list[KVCache]:
        t = self.config.t5_config
        return [KVCache(batch, t.num_heads, max_length, t.head_dim, self.dtype, self.device)
                for _ in range(self.decoder.num_layers)]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Tied output layer: hidden @ text table^T / sqrt(d_model)."""
        return (hidden @ self.text_token_embedder.weight.T) / math.sqrt(hidden.shape[-1])

    def forward(self, batch: Mapping[str, torch.Tensor], capture: Capture = None) -> torch.Tensor:
        """Teacher-forced text logits [B, T, V] for `targets/text/inputs`."""
        encoded = self.encode(batch, capture)
        tokens = batch["targets/text/inputs"]
        positions = batch.get("targets/text/pos_ids")
        if positions is None:
            positions = torch.arange(tokens.shape[1], device=tokens.device).expand(tokens.shape[0], -1)
        mask = batch.get("targets/text/mask")
        hidden = self.decode(tokens, positions, encoded, token_mask=mask, capture=capture)
        return self.logits(hidden)


def to_batch(arrays: Mapping[str, np.ndarray | torch.Tensor], device=None) -> dict[str, torch.Tensor]:
    """Numpy (or torch) arrays under the reference keys -> torch tensors on `device`.

    A leading "/" (the reference's flattened-key form) is dropped; `meta/*` entries are skipped.
    """
    out = {}
    for key, value in arrays.items():
        key = key.lstrip("/")
        if key.startswith("meta/"):
            continue
        tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
        out[key] = tensor.to(device) if device is not None else tensor
    return out
