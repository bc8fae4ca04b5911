"""Changing a trained network's image size: every weight is kept, and the ViT's position grid is the
learned one resized, so the new network's ViT equals the old one run on the larger grid."""

import pytest
import torch

from tests.tiny_policy import tiny_config
from uio_robot.policies.uio2.config import UIO2ConfigError
from uio_robot.policies.uio2.image_size import VIT_POSITIONS, with_image_size
from uio_robot.policies.uio2.model import UIO2Model


@pytest.fixture(scope="module")
def small():
    return UIO2Model(tiny_config(512, image_size=32)).init_weights(0).eval()


def test_weights_are_kept_and_the_grid_is_resized(small):
    big = with_image_size(small, 64)
    assert big.config.t5_config.default_image_vit_size == [64, 64]
    assert big.config.image_grid == (4, 4) and big.config.t5_config.encoder_max_image_length == 16
    assert small.config.t5_config.default_image_vit_size == [32, 32]  # the original is untouched
    old, new = small.state_dict(), big.state_dict()
    assert old.keys() == new.keys()
    for name in old:
        if name != VIT_POSITIONS:
            assert torch.equal(old[name], new[name]), name
    assert new[VIT_POSITIONS].shape == (17, old[VIT_POSITIONS].shape[1])
    assert torch.equal(new[VIT_POSITIONS][0], old[VIT_POSITIONS][0])  # the class token's row

    vit_old = small.input_embedders["image"].image_encoder.vision_transformer
    vit_new = big.input_embedders["image"].image_encoder.vision_transformer
    torch.manual_seed(0)
    patches = torch.randn(2, 16, 16 * 16 * 3)
    mask = torch.ones(2, 16, dtype=torch.bool)
    pos_ids = torch.arange(16).expand(2, 16)
    with torch.no_grad():
        want = vit_old(patches, mask, pos_ids, (4, 4))[0]
        got = vit_new(patches, mask, pos_ids, (4, 4))[0]
    assert torch.allclose(got, want, atol=1e-5)


def test_same_size_returns_the_model_and_bad_sizes_are_named(small):
    assert with_image_size(small, 32) is small
    with pytest.raises(ValueError, match="multiple of the patch size"):
        with_image_size(small, 40)


def test_the_resized_config_validates(small):
    big = with_image_size(small, 48)
    big.config.validate()
    assert big.config.image_vit_cfg.num_pos == 10
    with pytest.raises(UIO2ConfigError):
        big.config.image_vit_cfg.num_pos = 11
        big.config.validate()
