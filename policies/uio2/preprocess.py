"""UIO2 input preprocessing without TensorFlow: text tokens, resized/padded/normalized image patches.

The reference preprocessor resizes with TensorFlow's antialiased bilinear resize; `tf_resize_bilinear`
re-implements that filter in numpy (same spans, same float32 weights), so the model sees the same
pixels as the reference. `preprocess_image_torch` is the GPU path (torch's antialiased bilinear,
within ~1e-3 of the numpy path) for the control loop, where the image is already on the device.
All outputs are unbatched; `build_batch` stacks examples the way the reference does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from uio_robot.policies.types import check_image
from uio_robot.policies.uio2.tokenizer import UIO2Tokenizer

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
PATCH = 16
IMAGE_SIZE = 384
HISTORY_SIZE = 256
NUM_FRAMES = 4
MAX_TEXT_LEN = 512
TEXT_PREFIX = "[Text] [S]"

ImageLike = Union[np.ndarray, str, os.PathLike]


def load_image(image: ImageLike, name: str = "image") -> np.ndarray:
    """A uint8 HxWx3 RGB array from an array (checked) or an image file path."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{name}: image file not found: {path}")
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{name}: cannot decode image file {path}")
        image = np.ascontiguousarray(bgr[:, :, ::-1])
    return check_image(name, image)


# ------------------------------------------------------------------------------------------------
# Resize: TensorFlow's scale_and_translate with the triangle kernel (tf.image.resize bilinear + antialias)


@lru_cache(maxsize=32)  # a robot's cameras have fixed sizes: reuse the weights every tick
def _tf_resize_weights(in_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size] float32 weights of TF's antialiased bilinear resize along one axis.

    Follows TF's span computation in float32: sample centre (x + 0.5) / scale, a triangle kernel widened
    by 1/scale when shrinking (not when enlarging), the span clipped to the image, weights normalized per
    output pixel.
    """
    f32 = np.float32
    scale = f32(out_size) / f32(in_size)
    inv_scale = f32(1.0 / float(scale))
    kernel_scale = max(inv_scale, f32(1.0))
    sample = (np.arange(out_size, dtype=f32) + f32(0.5)) * inv_scale
    start = np.ceil(sample - kernel_scale - f32(0.5)).astype(np.int64)
    end = np.floor(sample + kernel_scale - f32(0.5)).astype(np.int64)
    start = np.clip(start, 0, in_size - 1)
    end = np.clip(end, 0, in_size - 1) + 1
    source = np.arange(in_size, dtype=np.int64)
    in_span = (source[None, :] >= start[:, None]) & (source[None, :] < end[:, None])
    pos = source.astype(f32)[None, :] + f32(0.5) - sample[:, None]
    weight = np.maximum(f32(1.0) - np.abs(pos / kernel_scale), f32(0.0)) * in_span
    total = weight.sum(axis=1, dtype=f32)
    ok = np.abs(total) >= f32(1000.0) * np.finfo(f32).tiny
    weight[ok] *= (f32(1.0) / total[ok])[:, None]
    weight[~ok] = 0.0
    weight.flags.writeable = False  # shared through the cache
    return weight


@lru_cache(maxsize=32)
def _tf_resize_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The nonzero weights of `_tf_resize_weights` per output pixel: (source index [out, K] int64,
    weight [out, K] float64), rows padded with index 0 / weight 0 to the widest span K."""
    weight = _tf_resize_weights(in_size, out_size)
    k = max(1, int((weight != 0).sum(axis=1).max()))
    idx, wts = np.zeros((out_size, k), np.int64), np.zeros((out_size, k), np.float64)
    for row in range(out_size):
        nz = np.flatnonzero(weight[row])
        idx[row, :nz.size], wts[row, :nz.size] = nz, weight[row, nz]
    idx.flags.writeable = wts.flags.writeable = False  # shared through the cache
    return idx, wts


def _resample_axis0(x: np.ndarray, taps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    idx, wts = taps
    out = wts[:, 0, None, None] * x[idx[:, 0]]
    for k in range(1, idx.shape[1]):
        out += wts[:, k, None, None] * x[idx[:, k]]
    return out


def tf_resize_bilinear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Antialiased bilinear resize of a float32 HxWxC image, as `tf.image.resize(antialias=True)`.

    A weighted sum over each output pixel's few source pixels (float64), not a dense matrix product:
    BLAS would spread these small products over threads, which costs 10-40x on a busy robot CPU."""
    h, w, _ = image.shape
    rows = _resample_axis0(image.astype(np.float64), _tf_resize_taps(h, out_h))  # along H
    cols = _resample_axis0(rows.transpose(1, 0, 2), _tf_resize_taps(w, out_w))  # along W
    return cols.transpose(1, 0, 2).astype(np.float32)


def _resize_geometry(h: int, w: int, out_h: int, out_w: int) -> tuple[int, int, int, int, np.ndarray]:
    """(new_h, new_w, top_pad, left_pad, image_info) with the reference's float32 arithmetic."""
    f32 = np.float32
    scale = min(f32(out_h) / f32(h), f32(out_w) / f32(w))
    new_h = max(1, int(f32(h) * scale))
    new_w = max(1, int(f32(w) * scale))
    top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
    info = np.array(
        [top, left, f32(1.0) / scale, h, w, 0.0, 0.0, 0.0, 0.0, new_h, new_w], dtype=np.float32
    )
    return new_h, new_w, top, left, info


def resize_and_pad(image: np.ndarray, out_h: int, out_w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit `image` (uint8 HxWx3) into out_h x out_w keeping its aspect ratio, centred, CLIP-normalized.

    Returns (float32 [out_h, out_w, 3] normalized pixels, padding included; bool [out_h, out_w] mask of
    image pixels; float32 [11] image_info as the reference writes it).
    """
    image = check_image("image", image)
    h, w = image.shape[:2]
    new_h, new_w, top, left, info = _resize_geometry(h, w, out_h, out_w)
    pixels = image.astype(np.float32) * np.float32(1.0 / 255.0)
    resized = np.clip(tf_resize_bilinear(pixels, new_h, new_w), 0.0, 1.0)
    canvas = np.zeros((out_h, out_w, 3), dtype=np.float32)
    canvas[top : top + new_h, left : left + new_w] = resized
    mask = np.zeros((out_h, out_w), dtype=bool)
    mask[top : top + new_h, left : left + new_w] = True
    return (canvas - CLIP_MEAN) / CLIP_STD, mask, info


def _check_patch_grid(h: int, w: int) -> None:
    if h % PATCH or w % PATCH:
        raise ValueError(f"image size {h}x{w} is not a multiple of the {PATCH}-pixel patch size")


def patchify(image: np.ndarray) -> np.ndarray:
    """[H, W, C] -> [(H/16)*(W/16), 16*16*C]: patches row-major, each flattened as (row, col, channel)."""
    h, w, c = image.shape
    _check_patch_grid(h, w)
    grid = image.reshape(h // PATCH, PATCH, w // PATCH, PATCH, c).transpose(0, 2, 1, 3, 4)
    return grid.reshape((h // PATCH) * (w // PATCH), PATCH * PATCH * c)


def patch_mask(pixel_mask: np.ndarray) -> np.ndarray:
    """int32 [(H/16)*(W/16)]: a patch is valid iff its pixel (16i+8, 16j+8) is image content."""
    _check_patch_grid(*pixel_mask.shape)
    half = PATCH // 2
    return pixel_mask[half::PATCH, half::PATCH].reshape(-1).astype(np.int32)


def preprocess_image(image: ImageLike, size: int, name: str = "image") -> tuple[np.ndarray, ...]:
    """(patches float32 [P, 768], patch mask int32 [P], image_info float32 [11]) for a size x size input."""
    pixels, mask, info = resize_and_pad(load_image(image, name), size, size)
    return patchify(pixels), patch_mask(mask), info


def preprocess_image_torch(image: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """The GPU path of `preprocess_image`: a uint8 HxWx3 tensor on any device, outputs on that device.

    Uses torch's antialiased bilinear resize, which differs from TF's by up to ~1e-3 in normalized units.
    """
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image: expected a torch.Tensor, got {type(image).__name__}")
    if image.dtype != torch.uint8:
        raise ValueError(f"image: expected dtype torch.uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image: expected shape HxWx3, got {tuple(image.shape)}")
    _check_patch_grid(size, size)
    h, w = image.shape[:2]
    new_h, new_w, top, left, info = _resize_geometry(h, w, size, size)
    device = image.device
    pixels = image.permute(2, 0, 1)[None].float() * np.float32(1.0 / 255.0)
    resized = F.interpolate(pixels, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    canvas = torch.zeros((1, 3, size, size), dtype=torch.float32, device=device)
    canvas[:, :, top : top + new_h, left : left + new_w] = resized.clamp(0.0, 1.0)
    mean = torch.as_tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.as_tensor(CLIP_STD, device=device).view(1, 3, 1, 1)
    normalized = ((canvas - mean) / std)[0]
    g = size // PATCH
    patches = normalized.reshape(3, g, PATCH, g, PATCH).permute(1, 3, 2, 4, 0).reshape(g * g, -1)
    mask = torch.zeros((size, size), dtype=torch.int32, device=device)
    mask[top : top + new_h, left : left + new_w] = 1
    half = PATCH // 2
    return patches, mask[half::PATCH, half::PATCH].reshape(-1), torch.as_tensor(info, device=device)


# ------------------------------------------------------------------------------------------------
# Examples and batches


def _text_tokens(tokenizer: UIO2Tokenizer, text: str, max_len: int) -> np.ndarray:
    ids = tokenizer.encode(text)[: max_len - 1] + [tokenizer.eos_id]
    return np.asarray(ids, dtype=np.int32)


def preprocess_example(
    tokenizer: UIO2Tokenizer,
    text_inputs: str,
    image: ImageLike | None = None,
    image_history: Sequence[ImageLike] | None = None,
    text_targets: str | None = None,
    num_frames: int = NUM_FRAMES,
    image_size: int = IMAGE_SIZE,
    history_size: int = HISTORY_SIZE,
    max_text_len: int = MAX_TEXT_LEN,
    task_prefix: str = TEXT_PREFIX,
) -> dict[str, np.ndarray]:
    """One example as the reference preprocessor builds it (unbatched; keys without the leading "/").

    The prompt gets the task prefix, is truncated to max_text_len - 1 ids and ends with EOS. History frames
    are oldest first; more than `num_frames` keeps the newest ones, fewer leaves empty slots (input 0,
    mask 0). Keys of absent parts (no image, no history, no target) are left out.
    """
    if not isinstance(text_inputs, str) or not text_inputs.strip():
        raise ValueError(f"text_inputs: expected a non-empty prompt string, got {text_inputs!r}")
    if num_frames < 1 or max_text_len < 2:
        raise ValueError(f"num_frames must be >= 1 and max_text_len >= 2, got {num_frames}, {max_text_len}")
    tokens = _text_tokens(tokenizer, f"{task_prefix} {text_inputs}", max_text_len)
    out: dict[str, np.ndarray] = {
        "inputs/text/tokens": tokens,
        "inputs/text/mask": (tokens > 0).astype(np.int32),
        "inputs/text/pos_ids": np.arange(tokens.size, dtype=np.int32),
    }
    if image is not None:
        patches, mask, info = preprocess_image(image, image_size, "image")
        out["inputs/image/input"] = patches
        out["inputs/image/mask"] = mask
        out["inputs/image/pos_ids"] = np.arange(mask.size, dtype=np.int32)
        out["meta/image_info"] = info
    if image_history:
        frames = list(image_history)[-num_frames:]
        n_patches = (history_size // PATCH) ** 2
        inputs = np.zeros((num_frames, n_patches, PATCH * PATCH * 3), dtype=np.float32)
        masks = np.zeros((num_frames, n_patches), dtype=np.int32)
        for t, frame in enumerate(frames):
            inputs[t], masks[t], _ = preprocess_image(frame, history_size, f"image_history[{t}]")
        out["inputs/image_history/input"] = inputs
        out["inputs/image_history/mask"] = masks
        out["inputs/image_history/pos_ids"] = np.tile(np.arange(n_patches, dtype=np.int32), (num_frames, 1))
    if text_targets is not None:
        if not isinstance(text_targets, str):
            raise ValueError(f"text_targets: expected a string, got {type(text_targets).__name__}")
        targets = _text_tokens(tokenizer, text_targets, max_text_len)
        mask = (targets > 0).astype(np.int32)
        out["targets/text/targets"] = targets
        out["targets/text/inputs"] = np.concatenate([[tokenizer.bos_id], targets[:-1]]).astype(np.int32)
        out["targets/text/mask"] = mask
        out["targets/text/pos_ids"] = np.arange(targets.size, dtype=np.int32)
        out["targets/text/segment_ids"] = mask.copy()
    return out


def build_batch(examples: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack examples: every key padded with zeros along its first axis to the longest example; an
    example without a key gets zeros there (so every mask is 0 on padding)."""
    if not examples:
        raise ValueError("build_batch: no examples")
    keys = sorted({k for ex in examples for k in ex})
    batch: dict[str, np.ndarray] = {}
    for key in keys:
        present = [np.asarray(ex[key]) for ex in examples if key in ex]
        tails = {a.shape[1:] for a in present}
        dtypes = {a.dtype for a in present}
        if len(tails) > 1 or len(dtypes) > 1 or any(a.ndim == 0 for a in present):
            raise ValueError(f"build_batch: key {key!r} has inconsistent shapes/dtypes {tails} {dtypes}")
        length = max(a.shape[0] for a in present)
        out = np.zeros((len(examples), length, *present[0].shape[1:]), dtype=present[0].dtype)
        for i, ex in enumerate(examples):
            if key in ex:
                a = np.asarray(ex[key])
                out[i, : a.shape[0]] = a
        batch[key] = out
    return batch
