"""The Hydra config as the source of the nodes' ROS parameters.

Every field of the exposed sections becomes a parameter named `<section>.<field>` (dict entries:
`<section>.<field>.<key>`), declared with the Hydra value as its default. Values given the ROS way
(`--ros-args -p loop.rate_hz:=10`, a launch file's parameters, a YAML file) override it; the result is
written back into the config and validated like any Hydra override, so a bad value fails at start with
its key named. Dict entries can only be added through Hydra (`+ros.cameras.wrist=wrist/image_raw`).
"""

from __future__ import annotations

import dataclasses
import typing

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rclpy.node import Node
from rclpy.parameter import Parameter

from uio_robot.agent.config import AppConfig, ConfigError, validate

SECTIONS = ("loop", "safety", "policy", "env", "ros")
LIST_TYPES = {float: Parameter.Type.DOUBLE_ARRAY, int: Parameter.Type.INTEGER_ARRAY, str: Parameter.Type.STRING_ARRAY,
              bool: Parameter.Type.BOOL_ARRAY}


def flatten(cfg: AppConfig, sections: tuple[str, ...] = SECTIONS) -> dict[str, tuple[object, type | None]]:
    """{parameter name: (value, element type of an empty list or None)} for the exposed sections."""
    out: dict[str, tuple[object, type | None]] = {}
    for section in sections:
        part = getattr(cfg, section)
        hints = typing.get_type_hints(type(part))
        for f in dataclasses.fields(part):
            value, hint = getattr(part, f.name), hints[f.name]
            name = f"{section}.{f.name}"
            if isinstance(value, dict):
                value_hint = typing.get_args(hint)[1]
                for key, item in value.items():
                    out[f"{name}.{key}"] = (item, _element(value_hint))
            else:
                out[name] = (value, _element(hint))
    return out


def _element(hint) -> type | None:
    args = typing.get_args(hint)
    return args[0] if typing.get_origin(hint) is list and args else None


def declare_config(node: Node, cfg: AppConfig, sections: tuple[str, ...] = SECTIONS) -> AppConfig:
    """Declare the config's fields as parameters of `node`; return the config with ROS overrides applied."""
    conf = OmegaConf.structured(cfg)
    for name, (value, element) in flatten(cfg, sections).items():
        if isinstance(value, list) and not value:
            param = node.declare_parameter(name, LIST_TYPES[element])
            final = [] if param.value is None else list(param.value)
        else:
            final = node.declare_parameter(name, value).value
            final = list(final) if isinstance(value, list) else final
        if final != value:
            try:
                OmegaConf.update(conf, name, final, merge=False)
            except OmegaConfBaseException as exc:
                raise ConfigError(f"ROS parameter {name}={final!r}: {exc}") from None
    result = typing.cast(AppConfig, OmegaConf.to_object(conf))
    validate(result)
    return result
