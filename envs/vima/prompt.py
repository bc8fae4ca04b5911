"""VIMA-style prompt templates: text with `{name}` image placeholders, and their assets.

One place for the placeholder syntax, shared by the native MuJoCo tasks and the VIMA-Bench adapter:
a template such as "put the {dragged_obj} into the {base_obj}." plus a mapping name -> image becomes
the interleaved parts ["put the", <image>, "into the", <image>, "."] that `Observation.instruction`
carries to a policy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def placeholders(template: str) -> list[str]:
    """The `{name}` placeholders of a template, left to right (repeats kept)."""
    return PLACEHOLDER.findall(template)


def prompt_parts(template: str, images: Mapping[str, np.ndarray]) -> list[str | np.ndarray]:
    """Interleave the template's words and the images its placeholders name.

    Text pieces are whitespace-normalized and empty ones dropped; every image must be uint8 HxWx3.
    A placeholder without an image is an error naming it and the images that exist.
    """
    if not isinstance(template, str) or not template.strip():
        raise ValueError(f"prompt: expected a non-empty template string, got {template!r}")
    parts: list[str | np.ndarray] = []
    pos = 0
    for match in PLACEHOLDER.finditer(template):
        text = " ".join(template[pos:match.start()].split())
        if text:
            parts.append(text)
        name = match.group(1)
        if name not in images:
            raise ValueError(f"prompt: placeholder {{{name}}} has no image; images: {sorted(images)}")
        image = images[name]
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                and image.shape[2] == 3):
            shape = getattr(image, "shape", None)
            raise ValueError(f"prompt: image {{{name}}} must be uint8 HxWx3, got {type(image).__name__} "
                             f"{getattr(image, 'dtype', '')} {shape}")
        parts.append(image)
        pos = match.end()
    tail = " ".join(template[pos:].split())
    if tail:
        parts.append(tail)
    return parts


def observation_prompt(obs: Mapping) -> list[str | np.ndarray]:
    """The interleaved prompt of a VIMA-style observation (its `instruction` template and `prompt_assets`)."""
    return prompt_parts(str(obs["instruction"]), obs.get("prompt_assets") or {})
