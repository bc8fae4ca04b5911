"""The UIO2 format of VIMA-style tasks: multimodal prompts and primitive (two-pose) actions.

Prompt: the images of an interleaved instruction go into the image history, in prompt order, and the
text refers to each with its history token, as the UIO2 paper does for VIMA-Bench:

    ["put the", img_a, "into the", img_b, "."]  ->  "put the <image_history_1> into the <image_history_2> ."
                                                     image history = [img_a, img_b]

The current camera image is the image input. A prompt with more images than the model's history
frames is an error (silently dropping a referenced image would make the task ambiguous).

Action: one primitive per request, a start pose and an end pose, each (x, y, rotation about z):

    pose0_x pose0_y pose0_yaw pose1_x pose1_y pose1_yaw   -> six location tokens

through the ordinary `Codec` with min-max statistics set to the action space's bounds (so the bins do
not depend on a dataset); its state vector is empty, VIMA-style tasks give no proprioception.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from uio_robot.policies.codec import Codec, VectorStats
from uio_robot.policies.prompts import location_text
from uio_robot.policies.types import Instruction, check_image

PRIMITIVE_ACTION_NAMES = ("pose0_x", "pose0_y", "pose0_yaw", "pose1_x", "pose1_y", "pose1_yaw")
PRIMITIVE_ACTION_UNITS = ("m", "m", "rad", "m", "m", "rad")
PROMPT_FORMAT = "vima_primitive"  # the checkpoint metadata's `prompt_format` for this layout


def history_token(i: int) -> str:
    """The token for the i-th (1-based) image-history frame."""
    return f"<image_history_{i}>"


def multimodal_prompt(instruction: Instruction, max_images: int) -> tuple[str, list[np.ndarray]]:
    """Interleaved text and images -> (text with history tokens, images for the image history)."""
    if isinstance(instruction, str):
        parts: Sequence = [instruction]
    else:
        parts = list(instruction)
    words: list[str] = []
    images: list[np.ndarray] = []
    for i, part in enumerate(parts):
        if isinstance(part, str):
            text = " ".join(part.split())
            if text:
                words.append(text)
        else:
            images.append(check_image(f"instruction part {i}", part))
            words.append(history_token(len(images)))
    if len(images) > max_images:
        raise ValueError(f"multimodal prompt: {len(images)} images, but the model takes at most {max_images} "
                         "image-history frames")
    if not words:
        raise ValueError("multimodal prompt: the instruction is empty")
    return " ".join(words), images


def primitive_stats(low: Sequence[float], high: Sequence[float]) -> VectorStats:
    """Min-max statistics over the primitive action space's bounds (six values each)."""
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    n = len(PRIMITIVE_ACTION_NAMES)
    if low.shape != (n,) or high.shape != (n,):
        raise ValueError(f"primitive action bounds: expected {n} values each, got {low.shape} and {high.shape}")
    if np.any(high <= low):
        raise ValueError(f"primitive action bounds: high must exceed low, got {low.tolist()} / {high.tolist()}")
    mid = ((low + high) / 2).tolist()
    return VectorStats(list(PRIMITIVE_ACTION_NAMES), low.tolist(), high.tolist(), low.tolist(), high.tolist(),
                       mid, ((high - low) / 2).tolist(), [True] * n, mode="minmax")


def primitive_codec(low: Sequence[float], high: Sequence[float]) -> Codec:
    """The codec of a primitive policy: six pose values, no state, one action per request."""
    empty = VectorStats([], [], [], [], [], [], [], [], mode="minmax")
    return Codec(primitive_stats(low, high), empty, chunk=1)


def primitive_target(codec: Codec, action: np.ndarray) -> str:
    """The text target of one primitive: six location tokens."""
    return location_text(codec.encode_actions(np.asarray(action, dtype=np.float64).reshape(1, -1)))
