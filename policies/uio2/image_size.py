"""Change a trained network's main image input size, for fine-tuning at a higher resolution.

A model trained at 64 px sees objects a few pixels wide; fine-tuning it at 128 px keeps what it learned
(the patch embedding works per 16 px patch, and image positions are scaled to the decoder's fixed grid)
while the ViT's learned position grid is resized to the new patch grid, as ViT fine-tuning does.
"""

from __future__ import annotations

import copy

import torch

from uio_robot.policies.uio2.config import UIO2Config
from uio_robot.policies.uio2.model import UIO2Model

VIT_POSITIONS = "input_embedders.image.image_encoder.vision_transformer.positional_embedding"


def resized_config(config: UIO2Config, size: int) -> UIO2Config:
    """`config` with a `size` x `size` main image input (history frames keep their size)."""
    patch = config.t5_config.image_vit_patch_size
    if size <= 0 or size % patch:
        raise ValueError(f"image size {size} must be a positive multiple of the patch size {patch}")
    new = copy.deepcopy(config)
    patches = (size // patch) ** 2
    new.t5_config.default_image_vit_size = [size, size]
    new.t5_config.encoder_max_image_length = patches
    new.image_vit_cfg.num_pos = patches + 1
    new.sequence_length["image_input_samples"] = patches
    new.validate()
    return new


def with_image_size(model: UIO2Model, size: int) -> UIO2Model:
    """A copy of `model` taking `size` px images: same weights, the ViT position grid resized."""
    if list(model.config.t5_config.default_image_vit_size) == [size, size]:
        return model
    config = resized_config(model.config, size)
    state = model.state_dict()
    old = state[VIT_POSITIONS]
    grid = config.image_grid
    with torch.no_grad():
        vit = model.input_embedders["image"].image_encoder.vision_transformer
        rows = vit.grid_positions(grid).to(old.dtype)
        state[VIT_POSITIONS] = torch.cat([old[:1], rows], 0)
    param = next(model.parameters())
    with torch.device("meta"):
        resized = UIO2Model(config)
    resized.load_state_dict(state, strict=True, assign=True)
    resized.rebuild_buffers()
    return resized.to(device=param.device).train(model.training).requires_grad_(param.requires_grad)
