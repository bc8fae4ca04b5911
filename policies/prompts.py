"""Prompt formats for the UIO2 policy: one text layout shared by training and inference.

A manipulation prompt is, after the "[Text] [S] " task prefix the preprocessor adds:

    <image_history_1> ... <image_history_k> robot state <loc> <loc> ... <instruction>

with the current camera image as the image input and the k previous frames (oldest first) as the image
history. The state is written as location tokens (one per state dimension, from the codec's bins). The
target is exactly chunk x action_dim location tokens, time-major, then EOS; decoding is constrained to
location tokens and stops after that many.

A question is the plain question text with the current image; answers are short text, and a "where is"
answer is two location tokens (y, x of the point in the image input's normalized coordinates).

Why one module: a prompt that differs by one space between training and inference is a silent failure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

LOCATION_OFFSET = 200  # <extra_id_{200 + b}> is location bin b


@dataclass(frozen=True)
class ActionFormat:
    """How a checkpoint's policy reads observations and writes actions; saved in its metadata."""

    chunk: int = 4  # actions per request
    history: int = 0  # previous frames given as image history
    history_stride: int = 1  # control steps between history frames
    camera: str = "image"  # observation image used as the image input
    state_dims: tuple[int, ...] = ()  # indices of the state vector written into the prompt; () = all

    def to_dict(self) -> dict:
        d = asdict(self)
        d["state_dims"] = list(self.state_dims)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ActionFormat:
        d = dict(d)
        d["state_dims"] = tuple(d.get("state_dims", ()))
        return cls(**d)


def location_text(bins: np.ndarray) -> str:
    """Bins [n] -> "<extra_id_..> <extra_id_..> ..." (space separated, as the tokenizer expects)."""
    return " ".join(f"<extra_id_{LOCATION_OFFSET + int(b)}>" for b in np.asarray(bins).reshape(-1))


def history_text(num_frames: int) -> str:
    return " ".join(f"<image_history_{i}>" for i in range(1, num_frames + 1))


def action_prompt(instruction: str, state_bins: np.ndarray, num_history: int = 0) -> str:
    """The text input of a control request."""
    instruction = " ".join(str(instruction).split())
    if not instruction:
        raise ValueError("action prompt: the instruction is empty")
    parts = [history_text(num_history)] if num_history else []
    parts += ["robot state", location_text(state_bins), instruction]
    return " ".join(parts)


def action_target(action_bins: np.ndarray) -> str:
    """The text target of a control request: the chunk's bins as location tokens."""
    return location_text(action_bins)


def question_prompt(question: str) -> str:
    question = " ".join(str(question).split())
    if not question:
        raise ValueError("question: the text is empty")
    return question


def point_answer(y: float, x: float) -> str:
    """A "where is" answer: the point (y, x) in [0, 1] image-input coordinates as two location tokens."""
    from uio_robot.policies.codec import value_to_bin

    return location_text(value_to_bin(np.array([y, x])))
