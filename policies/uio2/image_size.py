"""Change a trained network's main image input size, for fine-tuning at a higher resolution.

A model trained at 64 px sees objects a few pixels wide; fine-tuning it at 128 px keeps what it learned
(the patch embedding works per 16 px patch, and image positions are scaled to the decoder's fixed grid)
while the ViT's learned position grid is resized to the new patch grid, as ViT fine-tuning does.
"""

from __future__ import annotations

import torch

from uio_robot.policies.uio2.config import resized_config
from uio_robot.policies.uio2.model import UIO2Model

VIT_POSITIONS = "input_embedders.image.image_encoder.vision_transformer.positional_embedding"


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
