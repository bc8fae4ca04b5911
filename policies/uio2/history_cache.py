"""Image-history features computed once per frame and reused while the frame stays in the history.

Why: with k history frames, every control tick sees k-1 frames it already saw at the previous tick.
A history slot's embedding depends only on its frame (ViT -> pre_projection -> perceiver ->
post_projection, per frame); the slot index enters only through the rotary rows, added afterwards. So
the per-frame result can be cached under the frame's identity (a key the caller chooses: a frame
counter, a timestamp, a content hash) and the history block assembled from cached rows.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import torch

from uio_robot.policies.uio2.fast_ops import vit_forward
from uio_robot.policies.uio2.model import UIO2Model
from uio_robot.policies.uio2.preprocess import preprocess_image_torch

# A frame: a uint8 HxWx3 image tensor (preprocessed here, on its device), or (patches [P, C], mask [P]).
Frame = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class HistoryFeatureCache:
    """LRU cache frame key -> history embedding [latents, D] (before the modality embedding)."""

    def __init__(self, model: UIO2Model, capacity: int = 64):
        if capacity < 1:
            raise ValueError(f"history cache capacity must be >= 1, got {capacity}")
        self.model, self.capacity = model, capacity
        embedder = model.input_embedders["image_history"]
        self.embedder = embedder
        self.vit = model.input_embedders["image"].image_encoder.vision_transformer
        with torch.no_grad():
            self.grid_table = self.vit.grid_positions(embedder.grid)
        self.image_size = model.config.t5_config.default_image_history_vit_size[0]
        self.entries: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.hits = self.misses = 0

    @torch.no_grad()
    def compute(self, patches: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Embeddings [N, latents, D] of N preprocessed frames (patches [N, P, C], mask [N, P])."""
        dtype = self.embedder.post_projection.weight.dtype
        pos_ids = torch.arange(patches.shape[1], device=patches.device).expand(patches.shape[0], -1)
        last, _ = vit_forward(self.vit, patches.to(dtype), mask, pos_ids, self.grid_table, want_second=False)
        latents = self.embedder.resampler(self.embedder.pre_projection(last), mask)
        return self.embedder.post_projection(latents)

    def _patches(self, frame: Frame) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(frame, tuple):
            return frame
        patches, mask, _ = preprocess_image_torch(frame, self.image_size)
        return patches, mask

    @torch.no_grad()
    def features(self, keys: Sequence[Hashable], frames: Sequence[Frame | Callable[[], Frame]]) -> list[torch.Tensor]:
        """Embeddings of the frames under `keys`; only frames not cached yet are preprocessed and computed
        (in one batch). A frame may be given lazily as a zero-argument callable."""
        if len(keys) != len(frames):
            raise ValueError(f"history cache: {len(keys)} keys for {len(frames)} frames")
        out: list[torch.Tensor | None] = []
        missing: dict[Hashable, int] = {}
        for key in keys:
            cached = self.entries.get(key)
            if cached is not None:
                self.entries.move_to_end(key)
                self.hits += 1
            elif key not in missing:
                missing[key] = len(missing)
            out.append(cached)
        if missing:
            self.misses += len(missing)
            first = {key: frames[list(keys).index(key)] for key in missing}
            prepared = [self._patches(f() if callable(f) else f) for f in first.values()]
            device = self.embedder.post_projection.weight.device
            computed = self.compute(torch.stack([p for p, _ in prepared]).to(device),
                                    torch.stack([m for _, m in prepared]).to(device))
            for key, row in zip(missing, computed):
                self.entries[key] = row
                self.entries.move_to_end(key)
            while len(self.entries) > self.capacity:
                self.entries.popitem(last=False)
            out = [row if row is not None else computed[missing[k]] for row, k in zip(out, keys)]
        return out

    @torch.no_grad()
    def embed(self, keys_per_example: Sequence[Sequence[Hashable]],
              frames_per_example: Sequence[Sequence[Frame | Callable[[], Frame]]],
              num_slots: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The encoder's history block (x [B, slots*latents, D], mask int32, rope rows) from cached frames.

        Frames are oldest first; slot t holds frame t; slots beyond the given frames are empty (masked),
        as the preprocessor leaves them.
        """
        slots = num_slots or self.model.config.num_frames
        b = len(keys_per_example)
        lat, d = self.embedder.latents_size, self.embedder.post_projection.out_features
        weight = self.embedder.post_projection.weight
        x = torch.zeros(b, slots, lat, d, dtype=weight.dtype, device=weight.device)
        mask = torch.zeros(b, slots, lat, dtype=torch.int32, device=weight.device)
        if len(frames_per_example) != b:
            raise ValueError(f"history: {b} key lists for {len(frames_per_example)} frame lists")
        flat_keys, flat_frames, where = [], [], []
        for i, (keys, frames) in enumerate(zip(keys_per_example, frames_per_example)):
            if len(keys) != len(frames):
                raise ValueError(f"history example {i}: {len(keys)} keys for {len(frames)} frames")
            start = max(0, len(keys) - slots)  # more frames than slots: keep the newest
            for t in range(start, len(keys)):
                flat_keys.append(keys[t])
                flat_frames.append(frames[t])
                where.append((i, t - start))
        for (i, t), row in zip(where, self.features(flat_keys, flat_frames) if flat_keys else []):
            x[i, t] = row
            mask[i, t] = 1
        x = (x + self.embedder.modality_embedding.to(x.dtype)).reshape(b, slots * lat, d)
        rope = self.embedder.rope[:slots].reshape(1, slots * lat, -1).expand(b, -1, -1)
        return x, mask.reshape(b, slots * lat), rope
