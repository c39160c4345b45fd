"""Experiment configuration: typed dataclasses loaded from YAML files and key=value overrides.

`load` reads a file with its `_base_` files (`segls.config.files`), applies the overrides,
turns the result into the dataclasses of `segls.config.schema` (`segls.config.convert`: every
key and type checked) and checks every value (`segls.config.checks`); whatever is wrong is
reported with the file or override that set it. configs/README.md lists every key.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable

from segls import ConfigError
from segls.config.checks import check
from segls.config.convert import build_dataclass
from segls.config.files import (
    dump_yaml,
    merge_into,
    parse_override,
    read_config_tree,
    where_set,
    yaml_text,
)
from segls.config.schema import (
    Config,
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    RuntimeConfig,
    ScheduleConfig,
)

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "RuntimeConfig",
    "ScheduleConfig",
    "dump",
    "from_dict",
    "load",
    "to_dict",
    "to_yaml",
    "validate",
]


def _from_tree(tree: dict, where: Callable[[str], str]) -> Config:
    """Typed, checked Config from a merged mapping."""
    cfg = build_dataclass(Config, tree, where)
    check(cfg, where)
    return cfg


def load(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML config with its `_base_` files, apply "a.b=value" overrides, check."""
    if isinstance(overrides, str):
        raise TypeError(f"overrides must be a list of strings, got the string {overrides!r}")
    tree, sources = read_config_tree(path)
    for text in overrides:
        update, source = parse_override(text)
        merge_into(tree, update, source, sources)
    return _from_tree(tree, lambda key: where_set(sources, key))


def from_dict(data: dict, source: str = "config dict") -> Config:
    """Typed, checked Config from a plain mapping (e.g. `to_dict` output kept in a checkpoint)."""
    return _from_tree(data, lambda key: source)


def validate(cfg: Config) -> None:
    """Check the values of a Config built or edited in Python; raise ConfigError if any is bad."""
    check(cfg, lambda key: "config")


def to_dict(cfg: Config) -> dict:
    """Plain nested dict of a Config (deep copy)."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    """The YAML text of a Config, as `dump` writes it."""
    return yaml_text(to_dict(cfg))


def dump(cfg: Config, path: str | os.PathLike) -> None:
    """Write a Config as YAML, atomically; `load` reads it back to an equal Config."""
    dump_yaml(to_dict(cfg), path)
