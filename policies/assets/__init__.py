"""Files shipped inside the package: the default UIO2 policy checkpoint trained by this project.

`default/` holds model.safetensors, config.json, tokenizer.model and uio_robot.json (codec, action
format, training recipe), with a README.md giving its data recipe and evaluation results. It is the
checkpoint `rollout`, `eval` and `query` use when none is given.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_DIR = Path(__file__).resolve().parent / "default"
_REQUIRED = ("model.safetensors", "config.json", "tokenizer.model", "uio_robot.json")


def default_checkpoint() -> Path:
    """The directory of the shipped default checkpoint; a clear error when the install lacks it."""
    missing = [name for name in _REQUIRED if not (DEFAULT_DIR / name).is_file()]
    if missing:
        raise FileNotFoundError(f"the shipped default checkpoint is incomplete: {DEFAULT_DIR} lacks {missing} "
                                "(reinstall uio-robot, or pass a checkpoint path)")
    return DEFAULT_DIR
