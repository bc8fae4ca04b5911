"""Image inputs: the CLIP-style ViT, the image embedder and the image-history embedder (ViT + perceiver).

Module and parameter names follow the reference state dict
(`input_embedders.image.image_encoder.vision_transformer...`, `input_embedders.image_history.resampler...`).
The history embedder uses the image embedder's ViT, which is therefore stored once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from uio_robot.policies.uio2.config import ResamplerConfig, UIO2Config, ViTConfig
from uio_robot.policies.uio2.layers import MLP, Attention, RMSNorm, attention_bias, dot_attention, rope_2d

Capture = dict[str, torch.Tensor] | None


class ViTAttention(nn.Module):
    """Attention with biased q/k/v in-projections stored as separate tensors (the reference's layout)."""

    def __init__(self, dim: int, num_heads: int, head_dim: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        for name in ("query", "key", "value"):
            self.register_parameter(f"{name}_in_proj_weight", nn.Parameter(torch.empty(dim, dim)))
            self.register_parameter(f"{name}_in_proj_bias", nn.Parameter(torch.zeros(dim)))
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor, name: str) -> torch.Tensor:
        y = F.linear(x, getattr(self, f"{name}_in_proj_weight"), getattr(self, f"{name}_in_proj_bias"))
        return y.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        q = self._heads(x, "query").float() * self.head_dim ** -0.5
        y = dot_attention(q, self._heads(x, "key"), self._heads(x, "value"), bias)
        return self.out_proj(y.transpose(1, 2).flatten(2))


class ViTMLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class ResidualBlock(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.emb_dim, eps=1e-5)
        self.attn = ViTAttention(cfg.emb_dim, cfg.num_heads, cfg.head_dim)
        self.ln_2 = nn.LayerNorm(cfg.emb_dim, eps=1e-5)
        self.mlp = ViTMLP(cfg.emb_dim, cfg.mlp_dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), bias)
        return x + self.mlp(self.ln_2(x))


class Blocks(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualBlock(cfg) for _ in range(cfg.num_layers))


class VisionTransformer(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.embedding = nn.Linear(cfg.patch_size * cfg.patch_size * 3, cfg.emb_dim, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(cfg.emb_dim))
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.num_pos, cfg.emb_dim))
        self.pre_ln = nn.LayerNorm(cfg.emb_dim, eps=1e-5)
        self.transformer = Blocks(cfg)

    def grid_positions(self, grid: tuple[int, int]) -> torch.Tensor:
        """Patch position embeddings [rows*cols, D]: the learned square grid resized to `grid` if needed."""
        table = self.positional_embedding[1:].float()
        side = math.isqrt(table.shape[0])
        table = table.reshape(side, side, -1)
        if (side, side) != tuple(grid):
            table = F.interpolate(table.permute(2, 0, 1)[None], size=tuple(grid), mode="bicubic",
                                  align_corners=False, antialias=True)[0].permute(1, 2, 0)
        return table.reshape(-1, table.shape[-1])

    def forward(self, patches: torch.Tensor, mask: torch.Tensor, pos_ids: torch.Tensor,
                grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """patches [N, P, 3*ps*ps] -> (last block output, second block output), each [N, P, D]."""
        n = patches.shape[0]
        x = self.embedding(patches)
        cls = self.class_embedding.to(x.dtype).expand(n, 1, -1)
        pos = torch.cat([self.positional_embedding[:1].float().expand(n, 1, -1),
                         self.grid_positions(grid)[pos_ids.long()]], 1)
        x = self.pre_ln(torch.cat([cls, x], 1) + pos.to(x.dtype))
        valid = torch.cat([torch.ones_like(mask[:, :1]), mask], 1)
        bias = attention_bias(valid, valid)
        outputs = []
        for block in self.transformer.resblocks:
            x = block(x, bias)
            outputs.append(x)
        return outputs[-1][:, 1:], outputs[1][:, 1:]


class ImageFeature(nn.Module):
    """Wrapper kept for the reference's parameter path (`image_encoder.vision_transformer`)."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.vision_transformer = VisionTransformer(cfg)

    def forward(self, *args, **kwargs):
        return self.vision_transformer(*args, **kwargs)


class ImageEmbedder(nn.Module):
    """Main image: ViT [last, second] blocks concatenated -> projection -> + image modality embedding."""

    def __init__(self, config: UIO2Config):
        super().__init__()
        t = config.t5_config
        self.grid = config.image_grid
        self.image_encoder = ImageFeature(config.image_vit_cfg)
        self.projection = nn.Linear(2 * config.image_vit_cfg.emb_dim, t.emb_dim, bias=False)
        self.modality_embedding = nn.Parameter(torch.zeros(t.emb_dim))
        # Image patch coordinates are scaled to the decoder's 32x32 image grid.
        self.rope_scale = math.sqrt(t.decoder_max_image_length / t.encoder_max_image_length)
        self.head_dim = t.head_dim
        self.register_buffer("rope", self.rope_table(), persistent=False)

    def rope_table(self) -> torch.Tensor:
        return rope_2d(*self.grid, self.head_dim, self.rope_scale)

    def forward(self, patches, mask, pos_ids, capture: Capture = None):
        last, second = self.image_encoder(patches, mask, pos_ids, self.grid)
        x = self.projection(torch.cat([last, second], -1)) + self.modality_embedding.to(last.dtype)
        if capture is not None:
            capture.update({"image/vit_last": last, "image/vit_second": second, "image/embed": x})
        return x, mask, self.rope[pos_ids.long()]


class CrossAttentionLayer(nn.Module):
    def __init__(self, cfg: ResamplerConfig):
        super().__init__()
        self.pre_xattention_norm = RMSNorm(cfg.emb_dim)
        self.xattention = Attention(cfg.emb_dim, cfg.num_heads, cfg.head_dim, cfg.xattn_qk_norm,
                                    cfg.xattn_scaled_cosine, cfg.clip_attn_logit)
        self.pre_mlp_norm = RMSNorm(cfg.emb_dim)
        self.mlp = MLP(cfg.emb_dim, cfg.mlp_dim, cfg.mlp_activations)

    def forward(self, latents, context, xbias, sbias):
        x = latents + self.xattention(self.pre_xattention_norm(latents), context, xbias)
        return x + self.mlp(self.pre_mlp_norm(x))


class SelfAttentionLayer(nn.Module):
    def __init__(self, cfg: ResamplerConfig):
        super().__init__()
        self.pre_attention_norm = RMSNorm(cfg.emb_dim)
        self.attention = Attention(cfg.emb_dim, cfg.num_heads, cfg.head_dim, cfg.attn_qk_norm,
                                   cfg.attn_scaled_cosine, cfg.clip_attn_logit)
        self.pre_mlp_norm = RMSNorm(cfg.emb_dim)
        self.mlp = MLP(cfg.emb_dim, cfg.mlp_dim, cfg.mlp_activations)

    def forward(self, latents, context, xbias, sbias):
        x = latents + self.attention(self.pre_attention_norm(latents), None, sbias)
        return x + self.mlp(self.pre_mlp_norm(x))


class PerceiverResampler(nn.Module):
    """Learned latents attend to one frame's features (layers in `xattention_index`) or to themselves."""

    def __init__(self, cfg: ResamplerConfig):
        super().__init__()
        self.num_layers = cfg.num_layers
        self.latents = nn.Parameter(torch.zeros(cfg.latents_size, cfg.emb_dim))
        self.context_norm = RMSNorm(cfg.emb_dim)
        self.perceiver_norm = RMSNorm(cfg.emb_dim)
        for i in range(cfg.num_layers):
            layer = CrossAttentionLayer(cfg) if i in cfg.xattention_index else SelfAttentionLayer(cfg)
            self.add_module(f"layers_{i}", layer)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = features.shape[0]
        context = self.context_norm(features)
        latents = self.latents.to(features.dtype).expand(n, -1, -1)
        ones = torch.ones(latents.shape[:2], dtype=mask.dtype, device=mask.device)
        xbias, sbias = attention_bias(ones, mask), attention_bias(ones, ones)
        for i in range(self.num_layers):
            latents = getattr(self, f"layers_{i}")(latents, context, xbias, sbias)
        return self.perceiver_norm(latents)


class Resampler(nn.Module):
    """Wrapper kept for the reference's parameter path (`resampler.perceiver`)."""

    def __init__(self, cfg: ResamplerConfig):
        super().__init__()
        self.perceiver = PerceiverResampler(cfg)

    def forward(self, features, mask):
        return self.perceiver(features, mask)


class HistoryEmbedder(nn.Module):
    """Image history: per frame slot ViT (last block) -> pre_projection -> perceiver -> post_projection.

    Only frame slots with at least one valid patch are computed; an empty slot yields zero features
    plus the modality embedding and is masked out of the encoder (as the reference's frame compression
    does), so an unused slot costs nothing.
    """

    def __init__(self, config: UIO2Config):
        super().__init__()
        t, r = config.t5_config, config.image_history_cfg
        self.grid = config.history_grid
        self.latents_size, self.max_frames = r.latents_size, r.max_frames
        self.resampler = Resampler(r)
        self.pre_projection = nn.Linear(config.image_vit_cfg.emb_dim, r.emb_dim, bias=False)
        self.post_projection = nn.Linear(r.emb_dim, t.emb_dim, bias=False)
        self.modality_embedding = nn.Parameter(torch.zeros(t.emb_dim))
        self.head_dim = t.head_dim
        self.register_buffer("rope", self.rope_table(), persistent=False)

    def rope_table(self) -> torch.Tensor:
        """[max_frames, latents, head_dim]: latent l of frame t sits at 2D position (t, l)."""
        return rope_2d(self.max_frames, self.latents_size, self.head_dim).reshape(
            self.max_frames, self.latents_size, self.head_dim)

    def forward(self, patches, mask, pos_ids, vit: ImageFeature, capture: Capture = None):
        b, frames, p, _ = patches.shape
        if frames > self.max_frames:
            raise ValueError(f"image history has {frames} frame slots, the model supports {self.max_frames}")
        flat_mask = mask.reshape(b * frames, p)
        used = (flat_mask > 0).any(-1)
        idx = used.nonzero().squeeze(-1)
        lat, d = self.latents_size, self.post_projection.out_features
        dtype = self.post_projection.weight.dtype
        out = torch.zeros(b * frames, lat, d, dtype=dtype, device=patches.device)
        if capture is not None:
            vit_last = torch.zeros(b * frames, p, self.pre_projection.in_features, device=patches.device)
            resampled = torch.zeros(b * frames, lat, self.pre_projection.out_features, device=patches.device)
        if idx.numel():
            last, _ = vit(patches.reshape(b * frames, p, -1)[idx], flat_mask[idx],
                          pos_ids.reshape(b * frames, p)[idx], self.grid)
            latents = self.resampler(self.pre_projection(last), flat_mask[idx])
            out[idx] = self.post_projection(latents)
            if capture is not None:
                vit_last[idx], resampled[idx] = last.float(), latents.float()
        x = (out + self.modality_embedding.to(dtype)).reshape(b, frames * lat, d)
        latent_mask = used.reshape(b, frames, 1).expand(b, frames, lat).reshape(b, frames * lat).to(mask.dtype)
        rope = self.rope[:frames].reshape(1, frames * lat, -1).expand(b, -1, -1)
        if capture is not None:
            capture.update({
                "image_history/vit_last": vit_last.reshape(b, frames, p, -1),
                "image_history/resampler_out": resampled.reshape(b, frames, lat, -1),
                "image_history/embed": x, "image_history/mask": latent_mask,
            })
        return x, latent_mask, rope
