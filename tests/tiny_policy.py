"""A random-weight, very small UIO2 policy checkpoint in the project's format, for fast tests.

Real files, real network code, real tokenizer; only the sizes are tiny (64-pixel images, one encoder and
one decoder layer) so that loading and acting take milliseconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from uio_robot.envs import ACTION_NAMES, STATE_NAMES  # the tabletop suite's layout
from uio_robot.policies.codec import Codec, VectorStats
from uio_robot.policies.prompts import ActionFormat
from uio_robot.policies.uio2.checkpoint import save_checkpoint
from uio_robot.policies.uio2.config import ResamplerConfig, T5Config, UIO2Config, ViTConfig, round_vocab
from uio_robot.policies.uio2.model import UIO2Model
from uio_robot.policies.uio2.tokenizer import train_tokenizer

ACTION_LOW = np.array([-0.05, -0.05, -0.05, -0.3, -1.0])
TEXTS = [
    "pick up the red cube and put it in the box", "push the blue ball to the green zone",
    "stack the yellow cube on the red cylinder", "reach the green ball", "robot state",
    "what colour is the cube?", "how many objects are on the table?", "where is the red ball?",
    "is there a blue cylinder?", "yes", "no", "left", "right", "in front", "behind", "0.25 0.75",
] * 8


def tiny_config(vocab_size: int, image_size: int = 64, history_size: int = 32, num_frames: int = 2) -> UIO2Config:
    config = UIO2Config(
        t5_config=T5Config(vocab_size=vocab_size, emb_dim=64, num_heads=2, head_dim=32, mlp_dim=128,
                           num_encoder_layers=1, num_decoder_layers=1,
                           default_image_vit_size=[image_size, image_size],
                           default_image_history_vit_size=[history_size, history_size]),
        image_vit_cfg=ViTConfig(emb_dim=64, num_heads=2, head_dim=32, mlp_dim=128, num_layers=2,
                                num_pos=1 + (image_size // 16) ** 2),
        image_history_cfg=ResamplerConfig(emb_dim=32, num_heads=1, head_dim=32, mlp_dim=64, num_layers=1,
                                          xattention_index=[0], latents_size=4),
        input_modalities=["text", "image", "image_history"], target_modalities=["text"],
        use_audio_vit=False, use_audio_history_vit=False,
    )
    config.sequence_length["num_frames"] = num_frames
    config.validate()
    return config


def tiny_codec(chunk: int, state_names=STATE_NAMES, seed: int = 0) -> Codec:
    rng = np.random.default_rng(seed)
    actions = rng.uniform(ACTION_LOW, -ACTION_LOW, size=(400, len(ACTION_NAMES)))
    actions[:, 4] = np.sign(actions[:, 4])
    state = rng.normal(0.0, 0.3, size=(400, len(state_names)))
    return Codec(VectorStats.from_data(actions, list(ACTION_NAMES), normalize=[True] * 4 + [False]),
                 VectorStats.from_data(state, list(state_names)), chunk=chunk)


def make_tiny_checkpoint(directory: Path, chunk: int = 2, history: int = 1, seed: int = 0,
                         state_names=STATE_NAMES, control_period_s: float = 0.05) -> Path:
    """Write tokenizer + random weights + codec/action-format metadata to `directory`."""
    directory = Path(directory)
    tok = train_tokenizer(TEXTS, directory.parent / f".{directory.name}-tok" / "tok.model", vocab_size=300)
    model = UIO2Model(tiny_config(round_vocab(300))).init_weights(seed)
    fmt = ActionFormat(chunk=chunk, history=history, history_stride=2, camera="image")
    meta = {"codec": tiny_codec(chunk, state_names).to_dict(), "action_format": fmt.to_dict(),
            "control_period_s": control_period_s}
    return save_checkpoint(model, directory, tokenizer=tok, metadata=meta)
