"""`UIO2Policy`: the UIO2 network as a robot policy (actions) and a vision-language model (queries).

A control request becomes the prompt of `prompts.action_prompt` (the state written as location tokens,
the instruction), the current camera image (`ActionFormat.camera`) as the image input and recent frames
as image history. Decoding is constrained to exactly `chunk x action_dim` location tokens, which the
codec turns back into robot units. Queries (VQA, captions, grounding) use the same loaded model with
greedy text decoding.

History frames are chosen by time, not by call count, because the runtime asks for a chunk only every
few control steps: frame k (k = 1..history, oldest first in the prompt) is the newest stored frame taken
at or before `obs.timestamp - k * history_stride * period`. When the episode is younger than that, the
oldest frame of the episode stands in (at the first request: the current frame). Training builds its
examples with `history_frame_steps`, the same rule in control steps.

Everything a checkpoint needs to act travels inside it (`uio_robot.json`): the codec (normalization
statistics, layout, hash), the action format, optionally the control period the data was recorded at.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from uio_robot.policies.codec import Codec, CodecMismatch, bin_to_value
from uio_robot.policies.prompts import ActionFormat, action_prompt, question_prompt
from uio_robot.policies.types import ActionChunk, ArraySpec, InvalidObservation, Observation, YieldHook
from uio_robot.policies.uio2.checkpoint import (
    CheckpointError,
    load_model,
    read_metadata,
    tokenizer_file,
)
from uio_robot.policies.uio2.generate import generate
from uio_robot.policies.uio2.model import to_batch
from uio_robot.policies.uio2.preprocess import build_batch, load_image, preprocess_example
from uio_robot.policies.uio2.tokenizer import UIO2Tokenizer

log = logging.getLogger(__name__)
DEFAULT_PERIOD_S = 0.05  # the tabletop suite's control step, used when a checkpoint does not say
QUERY_MAX_TOKENS = 32
FAST_MAX_BATCH = 16  # larger batches (e.g. many parallel eval envs) take the plain path
_DEFAULT_STREAM = "default"
_UV_ANSWER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+(-?\d+(?:\.\d+)?)\s*$")


def history_frame_steps(step: int, history: int, stride: int) -> list[int]:
    """Control steps whose frames are the image history at `step` (oldest first), clamped at step 0.

    The rule training uses to build examples; `UIO2Policy` applies the same rule on timestamps.
    """
    return [max(step - k * stride, 0) for k in range(history, 0, -1)]


@dataclass
class Grounding:
    """A grounding answer: the decoded text and, when the model answered with location tokens, where.

    `point` is (x, y) and `box` is (x0, y0, x1, y1), both in pixels of the ORIGINAL image (the
    resize-and-pad of preprocessing undone). A "u v" text answer (normalized image coordinates, the
    simulator's VQA format) is read as a point too.
    """

    answer: str
    point: tuple[float, float] | None = None
    box: tuple[float, float, float, float] | None = None


class _FrameHistory:
    """The recent frames of one episode, with their timestamps (a small ring buffer)."""

    def __init__(self, size: int):
        self.frames: deque[tuple[float, np.ndarray]] = deque(maxlen=max(size, 1))

    def select(self, now: float, current: np.ndarray, offsets_s: list[float], tolerance_s: float) -> list[np.ndarray]:
        out = []
        for offset in offsets_s:
            target = now - offset + tolerance_s
            older = [img for t, img in self.frames if t <= target]
            out.append(older[-1] if older else (self.frames[0][1] if self.frames else current))
        return out

    def add(self, t: float, image: np.ndarray) -> None:
        self.frames.append((t, image))


class UIO2Policy:
    """A UIO2 checkpoint as a `Policy`; see the module docstring for the prompt and history rules."""

    def __init__(self, checkpoint_dir: str | Path, device: str = "auto", dtype: str = "auto",
                 period: float | None = None, tokenizer: str | Path | None = None, fast: bool | None = None):
        """`fast`: decode with `uio2.fast.FastGenerator` (static caches, CUDA graphs); None = on a GPU."""
        directory = Path(checkpoint_dir)
        if not directory.is_dir():
            raise CheckpointError(f"{directory}: policy checkpoint directory not found")
        meta = read_metadata(directory)
        if meta is None or "codec" not in meta or "action_format" not in meta:
            raise CheckpointError(f"{directory}: not a policy checkpoint: uio_robot.json with 'codec' and "
                                  "'action_format' is missing (a plain UIO2 checkpoint can answer queries only "
                                  "after fine-tuning with `uio-robot train`)")
        self.directory, self.metadata = directory, meta
        self.codec = Codec.from_dict(meta["codec"])
        try:
            self.format = ActionFormat.from_dict(meta["action_format"])
        except TypeError as exc:
            raise CheckpointError(f"{directory}/uio_robot.json: malformed action_format ({exc})") from None
        if self.format.chunk < 1 or self.format.history < 0 or self.format.history_stride < 1:
            raise CheckpointError(f"{directory}: action_format needs chunk >= 1, history >= 0, stride >= 1; "
                                  f"got {self.format}")
        if self.codec.chunk != self.format.chunk:
            raise CheckpointError(f"{directory}: codec chunk {self.codec.chunk} != action_format chunk "
                                  f"{self.format.chunk}")
        n_state = len(self.codec.state.names)
        bad = [i for i in self.format.state_dims if not 0 <= i < n_state]
        if bad:
            raise CheckpointError(f"{directory}: action_format.state_dims {bad} outside the {n_state} state dims")
        tok_path = Path(tokenizer) if tokenizer else tokenizer_file(directory)
        if tok_path is None:
            raise CheckpointError(f"{directory}: no tokenizer.model inside; pass tokenizer=PATH")
        self.tokenizer = UIO2Tokenizer(tok_path)
        self.model = load_model(directory, dtype=dtype, device=device)
        config = self.model.config
        vocab = config.t5_config.vocab_size
        if self.tokenizer.vocab_size > vocab:
            raise CheckpointError(f"{directory}: tokenizer has {self.tokenizer.vocab_size} ids, the model only "
                                  f"{vocab}")
        if self.format.history > config.num_frames:
            raise CheckpointError(f"{directory}: action_format.history {self.format.history} > the model's "
                                  f"{config.num_frames} history frames")
        if self.tokens_per_chunk >= config.t5_config.decoder_max_text_length:
            raise CheckpointError(f"{directory}: a chunk needs {self.tokens_per_chunk} tokens, the decoder holds "
                                  f"{config.t5_config.decoder_max_text_length - 1}")
        self.image_size = self._square(config.t5_config.default_image_vit_size, "default_image_vit_size")
        self.history_size = self._square(config.t5_config.default_image_history_vit_size,
                                         "default_image_history_vit_size")
        self.period = float(period or meta.get("control_period_s") or DEFAULT_PERIOD_S)
        if not self.period > 0:
            raise ValueError(f"UIO2Policy: period must be > 0 seconds, got {self.period}")
        device = self.model.device
        self._action_mask = self._id_mask(self.tokenizer.location_token_ids(), vocab, device)
        self._text_mask = self._id_mask(np.arange(1, self.tokenizer.vocab_size), vocab, device)
        self._histories: dict[Hashable, _FrameHistory] = {}
        # Two generators: the runtime may run `act` inside a query's between-steps hook, and each
        # generator's static buffers belong to one request at a time.
        self._fast_control = self._fast_query = None
        if fast or (fast is None and device.type == "cuda"):
            from uio_robot.policies.uio2.fast import FastGenerator

            longest = min(QUERY_MAX_TOKENS, config.t5_config.decoder_max_text_length - 1)
            try:
                self._fast_control = FastGenerator(self.model, max_batch=FAST_MAX_BATCH,
                                                   max_new_tokens=self.tokens_per_chunk)
                self._fast_query = FastGenerator(self.model, max_batch=FAST_MAX_BATCH, max_new_tokens=longest)
            except ValueError as exc:  # a network variant the fast path does not cover
                if fast:
                    raise
                log.warning("fast generation unavailable (%s); using the plain path", exc)
                self._fast_control = self._fast_query = None

    # ---- set-up ---------------------------------------------------------------------------------------
    @staticmethod
    def _square(size: list[int], name: str) -> int:
        if size[0] != size[1]:
            raise CheckpointError(f"UIO2Policy: only square image inputs are supported, {name} is {size}")
        return int(size[0])

    @staticmethod
    def _id_mask(ids: np.ndarray, vocab: int, device: torch.device) -> torch.Tensor:
        mask = torch.zeros(vocab, dtype=torch.bool)
        mask[torch.as_tensor(ids, dtype=torch.long)] = True
        return mask.to(device)

    @property
    def action_dim(self) -> int:
        return len(self.codec.action.names)

    @property
    def tokens_per_chunk(self) -> int:
        return self.format.chunk * self.action_dim

    def check_spec(self, action_spec: ArraySpec, state_spec: ArraySpec) -> None:
        """Raise `CodecMismatch` at start when the robot's action/state layout is not the checkpoint's."""
        self.codec.check_layout(action_spec.names, state_spec.names)

    def reset(self, stream: Hashable | None = None) -> None:
        """Forget the frame history (of one stream, or of all when `stream` is None)."""
        if stream is None:
            self._histories.clear()
        else:
            self._histories.pop(stream, None)

    def _generate(self, fast, batch: dict[str, torch.Tensor], max_new_tokens: int, **kwargs):
        size = batch["inputs/text/tokens"].shape[0]
        if fast is not None and size <= fast.max_batch and max_new_tokens <= fast.max_new_tokens:
            return fast.generate(batch, max_new_tokens=max_new_tokens, **kwargs)
        return generate(self.model, batch, max_new_tokens=max_new_tokens, **kwargs)

    # ---- control --------------------------------------------------------------------------------------
    def act(self, obs: Observation) -> ActionChunk:
        return self.act_batch([obs], [_DEFAULT_STREAM])[0]

    def act_batch(self, observations: Sequence[Observation],
                  streams: Sequence[Hashable] | None = None) -> list[ActionChunk]:
        """One chunk per observation, computed in one batch; `streams` names whose frame history each
        observation belongs to (e.g. the index of a parallel environment)."""
        if not observations:
            return []
        streams = list(streams) if streams is not None else list(range(len(observations)))
        if len(streams) != len(observations):
            raise ValueError(f"act_batch: {len(observations)} observations but {len(streams)} streams")
        examples = [self._control_example(obs, stream) for obs, stream in zip(observations, streams)]
        batch = to_batch(build_batch(examples), self.model.device)
        n = self.tokens_per_chunk
        out = self._generate(self._fast_control, batch, n, min_new_tokens=n, allowed_tokens=[self._action_mask])
        ids = out.tokens[:, 1:1 + n].cpu().numpy()
        chunks = []
        for obs, row in zip(observations, ids):
            bins = np.array([self.tokenizer.location_bin(i) for i in row], dtype=np.int64)
            actions = self.codec.decode_actions(bins)
            chunks.append(ActionChunk(actions, start_time=obs.timestamp, period=self.period,
                                      info={"bins": bins, "tokens": row}))
        return chunks

    def _instruction_text(self, obs: Observation) -> str:
        if isinstance(obs.instruction, str):
            return obs.instruction
        if any(not isinstance(part, str) for part in obs.instruction):
            raise InvalidObservation("instruction: this checkpoint's prompt format takes text only, "
                                     "the instruction contains images")
        return " ".join(obs.instruction)

    def _control_example(self, obs: Observation, stream: Hashable) -> dict[str, np.ndarray]:
        if not isinstance(obs, Observation):
            raise InvalidObservation(f"expected an Observation, got {type(obs).__name__}")
        obs.validate(len(self.codec.state.names))
        camera = self.format.camera
        if camera not in obs.images:
            raise InvalidObservation(f"image {camera!r} (the checkpoint's camera) missing; the observation has "
                                     f"{sorted(obs.images)}")
        text = self._instruction_text(obs)
        if not text.strip():
            raise InvalidObservation("instruction: empty; the policy needs a task instruction")
        state_bins = self.codec.encode_state(obs.state)
        if self.format.state_dims:
            state_bins = state_bins[list(self.format.state_dims)]
        image = obs.images[camera]
        fmt = self.format
        history = None
        if fmt.history:
            frames = self._histories.setdefault(stream, _FrameHistory(fmt.history * fmt.history_stride + 2))
            offsets = [k * fmt.history_stride * self.period for k in range(fmt.history, 0, -1)]
            history = frames.select(obs.timestamp, image, offsets, 0.5 * self.period)
            frames.add(obs.timestamp, image)
        return self._example(action_prompt(text, state_bins, fmt.history), image, history)

    def _example(self, prompt: str, image: np.ndarray | None, history=None) -> dict[str, np.ndarray]:
        config = self.model.config
        return preprocess_example(self.tokenizer, prompt, image=image, image_history=history,
                                  num_frames=config.num_frames, image_size=self.image_size,
                                  history_size=self.history_size,
                                  max_text_len=config.t5_config.encoder_max_text_length)

    # ---- queries --------------------------------------------------------------------------------------
    def _pick_image(self, images: dict[str, np.ndarray]) -> np.ndarray | None:
        if not images:
            return None
        name = self.format.camera if self.format.camera in images else sorted(images)[0]
        return load_image(images[name], name)

    def _answer_ids(self, requests: Sequence[tuple[dict[str, np.ndarray], str]], between_steps: YieldHook | None,
                    max_new_tokens: int) -> list[tuple[list[int], np.ndarray | None, np.ndarray | None]]:
        """Per (images, text): generated ids up to EOS, the image_info of the image input and the image."""
        images = [self._pick_image(imgs) for imgs, _ in requests]
        examples = [self._example(question_prompt(text), image) for image, (_, text) in zip(images, requests)]
        hook = None if between_steps is None else (lambda step: between_steps())
        out = self._generate(self._fast_query, to_batch(build_batch(examples), self.model.device), max_new_tokens,
                             allowed_tokens=[self._text_mask], between_steps=hook)
        results = []
        for row, example, image in zip(range(len(examples)), examples, images):
            ids = out.tokens[row, 1:1 + int(out.lengths[row])].tolist()
            if ids and ids[-1] == self.tokenizer.eos_id:
                ids = ids[:-1]
            results.append((ids, example.get("meta/image_info"), image))
        return results

    def query(self, images: dict[str, np.ndarray], text: str, between_steps: YieldHook | None = None,
              max_new_tokens: int = QUERY_MAX_TOKENS) -> str:
        """Answer a question (or caption an image) with greedy decoding, stopping at EOS."""
        (ids, _, _), = self._answer_ids([(images, text)], between_steps, max_new_tokens)
        return self.tokenizer.decode(ids).strip()

    def ground(self, images: dict[str, np.ndarray], text: str, between_steps: YieldHook | None = None,
               max_new_tokens: int = QUERY_MAX_TOKENS) -> Grounding:
        """Answer `text` and read the answer as a point or box in the original image's pixels."""
        return self.ground_batch([(images, text)], between_steps, max_new_tokens)[0]

    def ground_batch(self, requests: Sequence[tuple[dict[str, np.ndarray], str]],
                     between_steps: YieldHook | None = None,
                     max_new_tokens: int = QUERY_MAX_TOKENS) -> list[Grounding]:
        """`ground` for several (images, text) requests in one batch (evaluation)."""
        if not requests:
            return []
        return [self._grounding(ids, info, image)
                for ids, info, image in self._answer_ids(requests, between_steps, max_new_tokens)]

    def _grounding(self, ids: list[int], info: np.ndarray | None, image: np.ndarray | None) -> Grounding:
        answer = self.tokenizer.decode(ids).strip()
        locations = [i for i in ids if self.tokenizer.is_location(i)]
        if info is not None and len(locations) in (2, 4) and len(locations) == len(ids):
            bins = np.array([self.tokenizer.location_bin(i) for i in locations])
            yx = input_to_original(bin_to_value(bins).reshape(-1, 2), info, self.image_size)
            if len(locations) == 2:
                return Grounding(answer, point=(float(yx[0, 1]), float(yx[0, 0])))
            (y0, x0), (y1, x1) = yx
            return Grounding(answer, box=(float(x0), float(y0), float(x1), float(y1)))
        uv = parse_uv(answer)
        if uv is not None and image is not None:
            h, w = image.shape[:2]
            return Grounding(answer, point=(uv[0] * w, uv[1] * h))
        return Grounding(answer)


def input_to_original(yx: np.ndarray, image_info: np.ndarray, input_size: int) -> np.ndarray:
    """Points (y, x) in [0, 1] of the square image input -> pixels of the original image.

    Undoes preprocessing's resize-and-pad with its image_info ([top, left, 1/scale, h, w, ..]); points
    on the padding are clamped to the image.
    """
    top, left, inv_scale, h, w = (float(v) for v in np.asarray(image_info)[:5])
    yx = np.asarray(yx, dtype=np.float64) * input_size
    y = np.clip((yx[:, 0] - top) * inv_scale, 0.0, h)
    x = np.clip((yx[:, 1] - left) * inv_scale, 0.0, w)
    return np.stack([y, x], 1)


def parse_uv(answer: str) -> tuple[float, float] | None:
    """"u v" (two numbers, normalized image coordinates from the left/top edges) -> (u, v), else None."""
    match = _UV_ANSWER.match(answer)
    return None if match is None else (float(match.group(1)), float(match.group(2)))


__all__ = ["CodecMismatch", "Grounding", "UIO2Policy", "history_frame_steps", "input_to_original", "parse_uv"]
