"""`UIO2PrimitivePolicy`: a UIO2 checkpoint acting on VIMA-style tasks.

Beside `UIO2Policy`, whose prompt carries proprioception and frame history: here the request is the
multimodal prompt of `vima_prompts` (prompt images in the image history, history tokens in the text)
with the current camera image as the image input, and the answer is ONE primitive, six location
tokens (pose0 x, y, yaw, pose1 x, y, yaw), decoded by the checkpoint's codec. Loading, constrained
decoding, batching and queries are `UIO2Policy`'s.

A checkpoint for it says so in its metadata: `prompt_format: "vima_primitive"`, a codec with the six
primitive action names and no state, and `action_format.chunk = 1`.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path

import numpy as np

from uio_robot.policies.types import InvalidObservation, Observation
from uio_robot.policies.uio2.checkpoint import CheckpointError
from uio_robot.policies.uio2_policy import UIO2Policy
from uio_robot.policies.vima_prompts import PRIMITIVE_ACTION_NAMES, PROMPT_FORMAT, multimodal_prompt


class UIO2PrimitivePolicy(UIO2Policy):
    """See the module docstring; `act` returns an `ActionChunk` of one primitive [1, 6]."""

    def __init__(self, checkpoint_dir: str | Path, **kwargs):
        super().__init__(checkpoint_dir, **kwargs)
        problems = []
        if self.metadata.get("prompt_format") != PROMPT_FORMAT:
            problems.append(f"prompt_format is {self.metadata.get('prompt_format')!r}, not {PROMPT_FORMAT!r}")
        if tuple(self.codec.action.names) != PRIMITIVE_ACTION_NAMES:
            problems.append(f"action names {self.codec.action.names} are not {list(PRIMITIVE_ACTION_NAMES)}")
        if self.codec.state.names:
            problems.append(f"the codec has state dims {self.codec.state.names}; primitive tasks give none")
        if self.format.chunk != 1:
            problems.append(f"action_format.chunk is {self.format.chunk}, a primitive policy emits 1")
        if problems:
            raise CheckpointError(f"{self.directory}: not a VIMA primitive checkpoint: " + "; ".join(problems))

    @property
    def max_prompt_images(self) -> int:
        return int(self.model.config.num_frames)

    def _control_example(self, obs: Observation, stream: Hashable) -> dict[str, np.ndarray]:
        if not isinstance(obs, Observation):
            raise InvalidObservation(f"expected an Observation, got {type(obs).__name__}")
        obs.validate(0)
        camera = self.format.camera
        if camera not in obs.images:
            raise InvalidObservation(f"image {camera!r} (the checkpoint's camera) missing; the observation has "
                                     f"{sorted(obs.images)}")
        try:
            text, images = multimodal_prompt(obs.instruction, self.max_prompt_images)
        except ValueError as exc:
            raise InvalidObservation(str(exc)) from None
        return self._example(text, obs.images[camera], images or None)


__all__ = ["UIO2PrimitivePolicy"]
