"""UIO2 checkpoints: load the reference format, save/load the project's own, pick dtype and device.

A checkpoint is a directory with `config.json` (reference format) and the weights, either
`pytorch_model.bin` (a pickled state dict, read only through `torch.load(weights_only=True, mmap=True)`)
or `model.safetensors`. The project's own format is the safetensors variant plus, optionally, the
tokenizer (`tokenizer.model`) and extra metadata such as normalization statistics (`uio_robot.json`).

Loading builds the model on the meta device and assigns the stored tensors one by one, so a large
model is never held twice in memory. Every name and shape is checked first, and any mismatch is
reported in a single error listing missing, unexpected and mis-shaped tensors.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import save_file

from uio_robot.common.atomic import atomic_dir
from uio_robot.policies.uio2.config import UIO2Config
from uio_robot.policies.uio2.model import UIO2Model

log = logging.getLogger(__name__)

CONFIG_FILE, SAFETENSORS_FILE, BIN_FILE = "config.json", "model.safetensors", "pytorch_model.bin"
TOKENIZER_FILE, METADATA_FILE = "tokenizer.model", "uio_robot.json"
# Parts of a full UIO2 checkpoint that a text-output, image-input network does not use.
SKIPPED_PREFIXES = (
    "image_token_embedder.", "audio_token_embedder.", "input_embedders.audio.",
    "input_embedders.audio_history.", "target_embedders.image.", "target_embedders.audio.",
)
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
_SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
                       "F64": torch.float64, "I64": torch.int64, "I32": torch.int32}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says which file and what is wrong."""


def pick_device(name: str | None = "auto") -> torch.device:
    """`auto` (or None) -> CUDA when present, else CPU; otherwise the named device."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"device {name!r} requested but CUDA is not available")
    return device


def pick_dtype(name: str | torch.dtype | None = "auto", device: torch.device | None = None) -> torch.dtype:
    """`auto` -> bfloat16 on a GPU that supports it, float32 otherwise; or float32/bfloat16/float16."""
    if isinstance(name, torch.dtype):
        return name
    if name in (None, "", "auto"):
        on_gpu = device is not None and device.type == "cuda"
        return torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float32
    if name not in DTYPES:
        raise CheckpointError(f"unknown dtype {name!r}; choose one of {sorted(DTYPES)} or auto")
    return DTYPES[name]


# ---- reading weights ----------------------------------------------------------------------------

def _safetensors_header(path: Path) -> tuple[dict, int]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise CheckpointError(f"{path}: truncated or not a safetensors file (header of {n} bytes)")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: not a safetensors file ({exc})") from None
    header.pop("__metadata__", None)
    end = max((v["data_offsets"][1] for v in header.values()), default=0)
    if 8 + n + end > size:
        raise CheckpointError(f"{path}: truncated: tensors need {8 + n + end} bytes, the file has {size}")
    return header, 8 + n


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v["shape"]) for k, v in _safetensors_header(path)[0].items()}


def _safetensors_tensors(path: Path, names: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """Read tensors one at a time straight into fresh tensors (no mmap, so no second resident copy)."""
    header, base = _safetensors_header(path)
    with open(path, "rb") as f:
        for name in names:
            info = header[name]
            if info["dtype"] not in _SAFETENSORS_DTYPES:
                raise CheckpointError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
            tensor = torch.empty(info["shape"], dtype=_SAFETENSORS_DTYPES[info["dtype"]])
            start, end = info["data_offsets"]
            if tensor.numel() * tensor.element_size() != end - start:
                raise CheckpointError(f"{path}: tensor {name} has {end - start} bytes for shape {info['shape']}")
            f.seek(base + start)
            if tensor.numel():
                f.readinto(memoryview(tensor.view(-1).view(torch.uint8).numpy()))
            yield name, tensor


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises several types for damaged files
        raise CheckpointError(f"{path}: cannot read the weights (truncated or not a torch file): {exc}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (a state dict)")
    return state


def weights_file(directory: Path) -> Path:
    for name in (SAFETENSORS_FILE, BIN_FILE):
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(f"{directory}: no weights file ({SAFETENSORS_FILE} or {BIN_FILE})")


# ---- loading ------------------------------------------------------------------------------------

def check_shapes(expected: dict[str, tuple[int, ...]], stored: dict[str, tuple[int, ...]], source) -> list[str]:
    """Raise one CheckpointError listing every missing, unexpected and mis-shaped tensor.

    Returns the names of the stored tensors that were skipped as belonging to unused parts.
    """
    skipped = [k for k in stored if k.startswith(SKIPPED_PREFIXES) and k not in expected]
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected) - set(skipped))
    misshaped = sorted(f"{k}: checkpoint {list(stored[k])} vs model {list(expected[k])}"
                       for k in set(expected) & set(stored) if tuple(stored[k]) != tuple(expected[k]))
    if missing or unexpected or misshaped:
        lines = [f"{source}: the weights do not fit the model described by its config.json"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines += [f"    {item}" for item in items]
        raise CheckpointError("\n".join(lines))
    return skipped


def load_model(directory: str | Path, dtype: str | torch.dtype | None = "auto",
               device: str | torch.device | None = "auto") -> UIO2Model:
    """Load a UIO2 checkpoint directory (reference or project format) into an eval-mode model."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory not found")
    config = UIO2Config.load(directory / CONFIG_FILE)
    device = device if isinstance(device, torch.device) else pick_device(device)
    dtype = pick_dtype(dtype, device)
    path = weights_file(directory)
    with torch.device("meta"):
        model = UIO2Model(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        stored_shapes = _safetensors_shapes(path)
        skipped = check_shapes(expected, stored_shapes, path)
        tensors = _safetensors_tensors(path, sorted(expected))
    else:
        state = _load_bin(path)
        skipped = check_shapes(expected, {k: tuple(v.shape) for k, v in state.items()}, path)
        tensors = ((k, state[k]) for k in sorted(expected))
    if skipped:
        parts = sorted({".".join(k.split(".")[:2]) for k in skipped})
        log.info("skipped %d tensors of parts this network does not use: %s", len(skipped), ", ".join(parts))
    loaded = {name: tensor.to(device=device, dtype=dtype) for name, tensor in tensors}
    model.load_state_dict(loaded, strict=True, assign=True)
    model.rebuild_buffers()
    return model.eval().requires_grad_(False)


# ---- the project's own format -------------------------------------------------------------------

def save_checkpoint(model: UIO2Model, directory: str | Path, tokenizer: str | Path | None = None,
                    metadata: dict | None = None) -> Path:
    """Write `model` as model.safetensors + config.json (+ tokenizer.model, + uio_robot.json).

    The directory is assembled under a temporary name beside it and renamed into place, so a reader
    never sees a half-written checkpoint and a failed save leaves an existing one untouched.
    """
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / SAFETENSORS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2))
        if tokenizer is not None:
            shutil.copyfile(tokenizer, tmp / TOKENIZER_FILE)
        if metadata is not None:
            (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))
    return directory


def read_metadata(directory: str | Path) -> dict | None:
    """The extra metadata saved with a project checkpoint (None when there is none)."""
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None


def tokenizer_file(directory: str | Path) -> Path | None:
    """The tokenizer model shipped inside a project checkpoint, if any."""
    path = Path(directory) / TOKENIZER_FILE
    return path if path.is_file() else None
