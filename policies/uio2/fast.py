"""The fast generation path: the same greedy function as `generate.generate`, built for a robot's GPU.

What differs from the plain path (and why):
- Static buffers per (batch size, encoder length): self-attention KV caches [B, H, T_max, D], the
  cross-attention keys/values of the request, the token buffer, the step counter. A decode step then
  has fixed shapes and addresses, so it is captured once as a CUDA graph and replayed per token.
- The prompt is padded (mask 0) to a multiple of `bucket` tokens, so a new instruction of a similar
  length reuses the same buffers and graphs instead of building new ones.
- Everything a step decides stays on the device: the constrained-decoding mask (one row per step),
  argmax, EOS bookkeeping and the token write. The host looks at the result only every `check_every`
  steps (to stop early after EOS) and at the end.
- Fused attention, key-only masks and complex rotary (fast_ops.py); the image ViT in the model's dtype
  (bf16 on a GPU); history frames through `HistoryFeatureCache`.
On a CPU the same code runs eagerly (no graphs), which is how the tests check it against the plain path.
Not supported here (use `generate.generate`): sampling, per-token callables for allowed tokens, top-k.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from uio_robot.policies.uio2.fast_ops import (
    attend_one,
    check_supported,
    encoder_forward,
    key_value,
    logits,
    query,
    rope_complex,
    vit_forward,
)
from uio_robot.policies.uio2.generate import GenerationOutput
from uio_robot.policies.uio2.history_cache import Frame, HistoryFeatureCache
from uio_robot.policies.uio2.model import Encoded, UIO2Model
from uio_robot.policies.uio2.static_graph import GraphedFunction, StaticCall, graphs_available

# Allowed tokens for the fast path: per step an id collection or a bool mask [V] / [B, V] (the last entry
# repeats), or one bool tensor for every step: [V], [B, V], or [steps, B, V] as `allowed_mask` returns.
FastAllowed = Sequence["Sequence[int] | torch.Tensor"] | torch.Tensor


@dataclass
class _State:
    """Static buffers and captured calls of one (batch size, encoder length)."""

    hidden: torch.Tensor  # [B, L, D] encoder output (input of the cross K/V projection)
    embedded: torch.Tensor  # [B, L, D] encoder input
    key_mask: torch.Tensor  # [B, L] bool
    rope: torch.Tensor  # [B, L, D_head/2] complex
    k: list[torch.Tensor]  # per decoder layer [B, H, T_max, D_head]
    v: list[torch.Tensor]
    tokens: torch.Tensor  # [B, 1 + T_max] long: BOS then generated ids
    done: torch.Tensor  # [B] bool
    lengths: torch.Tensor  # [B] long
    step: torch.Tensor  # [1] long: the position being decoded
    allowed: torch.Tensor  # [T_max, B, V] bool
    cross: list = field(default_factory=list)  # per decoder layer (k, v) or None
    encode_call: StaticCall | None = None
    cross_call: StaticCall | None = None
    step_call: StaticCall | None = None


class FastGenerator:
    """Greedy (optionally constrained) generation with static caches, CUDA graphs and bucketed prompts.

    `model` is used as is (weights shared with the plain path); `device` / `dtype`, when given, move and
    cast it in place first (bf16 is the GPU setting). `max_new_tokens` sizes the caches; `bucket` is the
    prompt padding granularity; `check_every` how many steps run between EOS checks (1 on a CPU, where a
    check costs nothing).
    """

    def __init__(self, model: UIO2Model, *, max_batch: int = 8, max_new_tokens: int = 32, bucket: int = 64,
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                 use_cuda_graphs: bool | None = None, check_every: int | None = None,
                 history_capacity: int = 64, bos_id: int = 0, eos_id: int = 1, pad_id: int = 0):
        t = model.config.t5_config
        if not 1 <= max_new_tokens < t.decoder_max_text_length:
            raise ValueError(f"max_new_tokens must be in [1, {t.decoder_max_text_length - 1}], got {max_new_tokens}")
        if max_batch < 1 or bucket < 1:
            raise ValueError(f"max_batch and bucket must be >= 1, got {max_batch}, {bucket}")
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
            model.rebuild_buffers()
        self.model = model.eval().requires_grad_(False)
        self.device, self.dtype = model.device, model.dtype
        self.max_batch, self.max_new_tokens, self.bucket = max_batch, max_new_tokens, bucket
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.use_graphs = graphs_available(self.device) if use_cuda_graphs is None else use_cuda_graphs
        if self.use_graphs and not graphs_available(self.device):
            raise ValueError("CUDA graphs need the model on a CUDA device")
        self.check_every = check_every or (8 if self.use_graphs else 1)
        for i in range(t.num_encoder_layers):
            check_supported(getattr(model.encoder, f"layers_{i}").attention, "encoder")
        self.layers = model.decoder.layers()
        for layer in self.layers:
            check_supported(layer.self_attention, "decoder")
        self.vit = model.input_embedders["image"].image_encoder.vision_transformer
        with torch.no_grad():
            self.image_grid_table = self.vit.grid_positions(model.config.image_grid)
        self.target_rope = rope_complex(model.target_embedders["text"].rope[:max_new_tokens + 1])
        self.positions = torch.arange(max_new_tokens, device=self.device)
        self.history = HistoryFeatureCache(model, history_capacity)
        self.states: dict[tuple[int, int], _State] = {}
        self.setups = 0  # states built so far: stays put while prompts fall into known buckets
        self._vit = GraphedFunction(self._image_embed, self.use_graphs)
        self._allowed_cache: tuple[object, int, int, int, torch.Tensor] | None = None

    # ---- inputs -------------------------------------------------------------------------------------
    def bucketed_length(self, text_length: int) -> int:
        limit = self.model.config.t5_config.encoder_max_text_length
        padded = min(limit, -(-text_length // self.bucket) * self.bucket)
        if text_length > limit:
            raise ValueError(f"prompt of {text_length} tokens is longer than the model's {limit}")
        return padded

    def _image_embed(self, patches: torch.Tensor, mask: torch.Tensor, pos_ids: torch.Tensor) -> torch.Tensor:
        embedder = self.model.input_embedders["image"]
        last, second = vit_forward(self.vit, patches, mask, pos_ids, self.image_grid_table, want_second=True)
        return embedder.projection(torch.cat([last, second], -1)) + embedder.modality_embedding.to(last.dtype)

    @torch.no_grad()
    def image_part(self, batch: Mapping[str, torch.Tensor]) -> tuple | None:
        """The main image's encoder input (x, mask, rope rows): ViT in the model dtype, projection."""
        if "inputs/image/input" not in batch:
            return None
        mask = batch["inputs/image/mask"].to(self.device)
        pos = batch["inputs/image/pos_ids"].to(self.device)
        x = self._vit(batch["inputs/image/input"].to(self.device, self.dtype), mask, pos)
        return x, mask, self.model.input_embedders["image"].rope[pos.long()]

    @torch.no_grad()
    def embed(self, batch: Mapping[str, torch.Tensor], history: tuple | None = None, image: tuple | None = None):
        """Encoder input (x [B, L, D], key mask bool [B, L], rope complex [B, L, D_head/2]), prompt bucketed.

        `image` is `image_part(batch)` when already computed. `history`, when given, is the block from
        `history_block` and replaces any `inputs/image_history/*` of the batch.
        """
        m, dev = self.model, self.device
        tokens = batch["inputs/text/tokens"].to(dev)
        b, n = tokens.shape
        if b > self.max_batch:
            raise ValueError(f"batch of {b} is larger than max_batch={self.max_batch}")
        mask = batch.get("inputs/text/mask")
        mask = (tokens > 0).to(torch.int32) if mask is None else mask.to(dev)
        pos = batch.get("inputs/text/pos_ids")
        pos = torch.arange(n, device=dev).expand(b, -1) if pos is None else pos.to(dev)
        pad = self.bucketed_length(n) - n
        if pad:
            tokens, mask, pos = (torch.nn.functional.pad(t, (0, pad)) for t in (tokens, mask, pos))
        x, rope = m.input_embedders["text"](tokens, m.text_token_embedder, pos)
        parts = [(x, mask, rope)]
        image = self.image_part(batch) if image is None else image
        if image is not None:
            parts.append(image)
        if history is not None:
            parts.append(history)
        elif "inputs/image_history/input" in batch:
            parts.append(m.input_embedders["image_history"](
                batch["inputs/image_history/input"].to(dev, self.dtype), batch["inputs/image_history/mask"].to(dev),
                batch["inputs/image_history/pos_ids"].to(dev), m.input_embedders["image"].image_encoder))
        x, mask, rope = (torch.cat(p, 1) for p in zip(*parts))
        return x, mask > 0, rope_complex(rope)

    def history_block(self, keys_per_example: Sequence[Sequence[Hashable]],
                      frames_per_example: Sequence[Sequence[Frame | Callable[[], Frame]]]) -> tuple:
        """The history part of the encoder input from cached per-frame features (see HistoryFeatureCache)."""
        return self.history.embed(keys_per_example, frames_per_example)

    # ---- static state -------------------------------------------------------------------------------
    def _state(self, b: int, length: int) -> _State:
        state = self.states.get((b, length))
        if state is not None:
            return state
        t, dev, dt = self.model.config.t5_config, self.device, self.dtype
        cache = (b, t.num_heads, self.max_new_tokens, t.head_dim)
        state = _State(
            hidden=torch.zeros(b, length, t.emb_dim, dtype=dt, device=dev),
            embedded=torch.zeros(b, length, t.emb_dim, dtype=dt, device=dev),
            key_mask=torch.zeros(b, length, dtype=torch.bool, device=dev),
            rope=torch.zeros(b, length, t.head_dim // 2, dtype=torch.complex64, device=dev),
            k=[torch.zeros(cache, dtype=dt, device=dev) for _ in self.layers],
            v=[torch.zeros(cache, dtype=dt, device=dev) for _ in self.layers],
            tokens=torch.full((b, 1 + self.max_new_tokens), self.pad_id, dtype=torch.long, device=dev),
            done=torch.zeros(b, dtype=torch.bool, device=dev),
            lengths=torch.zeros(b, dtype=torch.long, device=dev),
            step=torch.zeros(1, dtype=torch.long, device=dev),
            allowed=torch.ones(self.max_new_tokens, b, t.vocab_size, dtype=torch.bool, device=dev),
        )
        state.key_mask[:, 0] = True  # a valid key, so warm-up runs see no all-masked row
        state.encode_call = StaticCall(lambda: self._encode_into(state), self.use_graphs)
        state.cross_call = StaticCall(lambda: self._cross_kv(state), self.use_graphs)
        state.cross = state.cross_call.outputs if self.use_graphs else self._cross_kv(state)
        state.step_call = StaticCall(lambda: self._step(state), self.use_graphs, reset=state.step.zero_)
        self.states[(b, length)] = state
        self.setups += 1
        return state

    def _encode_into(self, s: _State) -> None:
        s.hidden.copy_(encoder_forward(self.model.encoder, s.embedded, s.key_mask, s.rope))

    def _cross_kv(self, s: _State) -> list:
        return [key_value(layer.encoder_decoder_attention, s.hidden, s.rope) if layer.has_cross else None
                for layer in self.layers]

    def _step(self, s: _State) -> None:
        """One decode step for every row: read token `step`, write token `step + 1`. No host sync."""
        m = self.model
        pos = s.step
        token = s.tokens.index_select(1, pos)  # [B, 1]
        x = m.text_token_embedder(token)
        x = x + m.target_embedders["text"].modality_embedding.to(x.dtype)
        rope = self.target_rope.index_select(0, pos)[None]  # [1, 1, D_head/2]
        self_mask = (self.positions <= pos)[None, None, None, :]
        cross_mask = s.key_mask[:, None, None, :]
        for i, layer in enumerate(self.layers):
            a = layer.self_attention
            h = layer.pre_self_attention_norm(x)
            k, v = key_value(a, h, rope)
            s.k[i].index_copy_(2, pos, k)
            s.v[i].index_copy_(2, pos, v)
            x = x + attend_one(a, query(a, h, rope), s.k[i], s.v[i], self_mask)
            if layer.has_cross:
                xa = layer.encoder_decoder_attention
                x = x + attend_one(xa, query(xa, layer.pre_cross_attention_norm(x), rope), *s.cross[i], cross_mask)
            x = x + layer.mlp(layer.pre_mlp_norm(x))
        scores = logits(m.text_token_embedder.weight, m.decoder.decoder_norm(x)[:, 0])
        scores = scores.masked_fill(~s.allowed.index_select(0, pos)[0], float("-inf"))
        next_ids = torch.where(s.done, self.pad_id, scores.argmax(-1))
        s.lengths.add_((~s.done).long())
        s.tokens.index_copy_(1, pos + 1, next_ids[:, None])
        s.done.logical_or_(next_ids == self.eos_id)
        s.step.add_(1)

    # ---- constrained decoding ---------------------------------------------------------------------
    def allowed_mask(self, allowed: FastAllowed | None, batch: int, steps: int,
                     min_new_tokens: int = 0) -> torch.Tensor:
        """Bool [steps, B, V] on the device: allowed ids per step and row, EOS removed before min_new_tokens.

        Raises ValueError when some step leaves a row nothing to choose (as the plain path does).
        """
        vocab = self.model.config.t5_config.vocab_size
        if callable(allowed):
            raise TypeError("the fast path takes allowed tokens as per-step ids or masks, not a callable")
        if allowed is None:
            mask = torch.ones(steps, batch, vocab, dtype=torch.bool)
        elif isinstance(allowed, torch.Tensor):
            mask = _as_mask(allowed, vocab).to("cpu")
            if mask.ndim == 3:
                if mask.shape[0] < steps:
                    raise ValueError(f"allowed mask covers {mask.shape[0]} steps, {steps} requested")
                mask = mask[:steps]
            mask = mask.expand(steps, batch, vocab).clone() if mask.ndim < 3 else mask.expand(-1, batch, -1).clone()
        else:
            if len(allowed) == 0:
                raise ValueError("allowed tokens: empty per-step list")
            rows = [_as_mask(allowed[min(i, len(allowed) - 1)], vocab).to("cpu") for i in range(steps)]
            mask = torch.stack([r.expand(batch, vocab) for r in rows])
        mask[:min(min_new_tokens, steps), :, self.eos_id] = False
        empty = (~mask.any(-1)).any(-1).nonzero()
        if len(empty):
            raise ValueError(f"constrained decoding: no allowed token left at step {int(empty[0])}")
        return mask.to(self.device)

    def _cached_allowed(self, allowed, batch: int, steps: int, min_new: int) -> torch.Tensor:
        """The same allowed spec as last time (an action step's location tokens) is not rebuilt."""
        c = self._allowed_cache
        if c is not None and c[0] is allowed and c[1:4] == (batch, steps, min_new):
            return c[4]
        mask = self.allowed_mask(allowed, batch, steps, min_new)
        if allowed is not None and not isinstance(allowed, list):  # lists may be mutated by the caller
            self._allowed_cache = (allowed, batch, steps, min_new, mask)
        return mask

    # ---- public entry points ------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, batch: Mapping[str, torch.Tensor], history: tuple | None = None) -> Encoded:
        """Encoder output of the (bucketed) batch, usable with `generate(encoded=...)` of either path."""
        x, key_mask, rope = self.embed(batch, history)
        state = self._state(x.shape[0], x.shape[1])
        self._load_inputs(state, x, key_mask, rope)
        state.encode_call()
        real = torch.view_as_real(state.rope).flatten(-2)
        return Encoded(state.hidden.clone(), state.key_mask.to(torch.int32), real.clone())

    def _load_inputs(self, s: _State, x, key_mask, rope) -> None:
        s.embedded.copy_(x)
        s.key_mask.copy_(key_mask)
        s.rope.copy_(rope)

    @torch.no_grad()
    def prefill(self, batch: Mapping[str, torch.Tensor] | None = None, *, encoded: Encoded | None = None,
                history: tuple | None = None, embedded: tuple | None = None) -> _State:
        """Run the encoder (unless `encoded` is given) and the cross-attention K/V into the static buffers
        of this batch size and bucket; `embedded` is `embed(...)`'s output when already computed."""
        if encoded is not None:
            state = self._load_encoded(encoded)
        else:
            if embedded is None:
                if batch is None:
                    raise ValueError("prefill needs a batch, an embedded batch or an encoded batch")
                embedded = self.embed(batch, history)
            x, key_mask, rope = embedded
            state = self._state(x.shape[0], x.shape[1])
            self._load_inputs(state, x, key_mask, rope)
            state.encode_call()
        cross = state.cross_call()
        if not self.use_graphs:
            state.cross = cross
        return state

    @torch.no_grad()
    def decode(self, state: _State, allowed_tokens: FastAllowed | None = None, max_new_tokens: int | None = None,
               min_new_tokens: int = 0, between_steps: Callable[[int], None] | None = None) -> GenerationOutput:
        """Greedy decoding from a prefilled state; `between_steps(step)` runs at every EOS check."""
        steps = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        if not 1 <= steps <= self.max_new_tokens:
            raise ValueError(f"max_new_tokens must be in [1, {self.max_new_tokens}], got {steps}")
        allowed = self._cached_allowed(allowed_tokens, state.tokens.shape[0], steps, min_new_tokens)
        state.allowed[:steps].copy_(allowed)
        state.tokens.fill_(self.pad_id)
        state.tokens[:, 0] = self.bos_id
        state.done.zero_()
        state.lengths.zero_()
        state.step.zero_()
        for step in range(steps):
            if step and step % self.check_every == 0:
                if between_steps is not None:
                    between_steps(step)
                if bool(state.done.all()):
                    break
            state.step_call()
        width = 1 + int(state.lengths.max())
        return GenerationOutput(state.tokens[:, :width].clone(), state.lengths.clone())

    def generate(self, batch: Mapping[str, torch.Tensor] | None = None, *, encoded: Encoded | None = None,
                 history: tuple | None = None, allowed_tokens: FastAllowed | None = None,
                 max_new_tokens: int | None = None, min_new_tokens: int = 0,
                 between_steps: Callable[[int], None] | None = None) -> GenerationOutput:
        """Greedy generation; tokens and lengths as `generate.generate` returns them for the same inputs."""
        state = self.prefill(batch, encoded=encoded, history=history)
        return self.decode(state, allowed_tokens, max_new_tokens, min_new_tokens, between_steps)

    def _load_encoded(self, encoded: Encoded) -> _State:
        """Pad an encoder output (e.g. from `UIO2Model.encode`) to a bucket and load it."""
        b, n, _ = encoded.hidden.shape
        length = -(-n // self.bucket) * self.bucket
        state = self._state(b, length)
        state.hidden.zero_()
        state.hidden[:, :n] = encoded.hidden.to(self.device, self.dtype)
        state.key_mask.zero_()
        state.key_mask[:, :n] = encoded.mask.to(self.device) > 0
        state.rope.zero_()
        state.rope[:, :n] = rope_complex(encoded.rope.to(self.device))
        return state

    # ---- accounting ---------------------------------------------------------------------------------
    def decode_bytes_per_token(self, batch: int, encoder_length: int) -> int:
        """Bytes a decode step must read: decoder weights (cross K/V projections excluded: they run once
        per request), the output table, the cross-attention K/V of the request and the full self caches."""
        size = torch.tensor([], dtype=self.dtype).element_size()
        t = self.model.config.t5_config
        weights = 0
        for layer in self.layers:
            for name, p in layer.named_parameters():
                if not name.startswith(("encoder_decoder_attention.key", "encoder_decoder_attention.value")):
                    weights += p.numel()
        weights += self.model.text_token_embedder.weight.numel() + t.emb_dim
        inner = t.num_heads * t.head_dim
        cross_layers = sum(layer.has_cross for layer in self.layers)
        kv = batch * inner * 2 * (cross_layers * encoder_length + len(self.layers) * self.max_new_tokens)
        return (weights + kv) * size


def _as_mask(ids, vocab: int) -> torch.Tensor:
    """Ids or a bool mask -> bool mask [..., V]."""
    t = torch.as_tensor(ids)
    if t.dtype == torch.bool:
        if t.shape[-1] != vocab:
            raise ValueError(f"allowed mask has {t.shape[-1]} entries, the vocabulary {vocab}")
        return t
    if t.ndim != 1:
        raise ValueError(f"allowed ids must be a 1-D collection, got shape {tuple(t.shape)}")
    if len(t) and (int(t.min()) < 0 or int(t.max()) >= vocab):
        raise ValueError(f"allowed ids must be in [0, {vocab}), got range [{int(t.min())}, {int(t.max())}]")
    mask = torch.zeros(vocab, dtype=torch.bool)
    mask[t.long()] = True
    return mask

