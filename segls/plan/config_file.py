"""The generated config: `Choice`s applied to a `Config`, written as YAML with a reason per key.

Every key of every section is written, so the file runs on its own (no ``_base_``) and shows
all that training will use; keys no rule chose keep the defaults and say so. Values are
written in JSON's flow syntax, which YAML reads unchanged (strings quoted, so ``"off"`` stays
a string). After writing, the file is loaded back and must equal the planned config.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import textwrap
from collections.abc import Iterable

from segls import config
from segls.io import write_text
from segls.plan.rules import Choice

LINE_WIDTH = 100


def apply_choices(choices: Iterable[Choice], base: config.Config | None = None) -> config.Config:
    """A copy of `base` (default: the schema defaults) with every choice's value set."""
    cfg = copy.deepcopy(base) if base is not None else config.Config()
    for choice in choices:
        section, name = choice.key.split(".")
        setattr(getattr(cfg, section), name, copy.deepcopy(choice.value))
    return cfg


def _comment_lines(text: str, indent: str) -> list[str]:
    """`text` as ``# `` comment lines wrapped to LINE_WIDTH."""
    width = LINE_WIDTH - len(indent) - 2
    return [f"{indent}# {line}" for line in textwrap.wrap(text, width)]


def render(cfg: config.Config, choices: Iterable[Choice], header: list[str]) -> str:
    """YAML text of `cfg`: `header` comment lines, then each section with a reason per key."""
    reasons = {choice.key: choice.why for choice in choices}
    lines = [line for text in header for line in _comment_lines(text, "")]
    for section in dataclasses.fields(cfg):
        values = getattr(cfg, section.name)
        if not dataclasses.is_dataclass(values):  # a top-level key such as `name`
            lines += _entry(section.name, values, reasons.get(section.name, "default"), "")
            continue
        lines.append(f"{section.name}:")
        for item in dataclasses.fields(values):
            why = reasons.get(f"{section.name}.{item.name}", "default")
            lines += _entry(item.name, getattr(values, item.name), why, "  ")
    return "\n".join(lines) + "\n"


def _entry(name: str, value: object, why: str, indent: str) -> list[str]:
    """``name: value  # why`` at `indent`, or the reason on comment lines above when long."""
    entry = f"{indent}{name}: {json.dumps(value, ensure_ascii=False)}"
    if len(entry) + len(why) + 4 <= LINE_WIDTH:
        return [f"{entry}  # {why}"]
    return _comment_lines(why, indent) + [entry]


def write_config(
    cfg: config.Config, choices: Iterable[Choice], header: list[str], path: str | os.PathLike
) -> None:
    """Validate `cfg`, write it to `path` atomically with its reasons, and check it loads back."""
    config.validate(cfg)
    write_text(path, render(cfg, choices, header))
    loaded = config.load(path)
    if config.to_dict(loaded) != config.to_dict(cfg):
        raise RuntimeError(f"{path} does not load back to the planned config; please report this")
