"""Turn a plain mapping into nested dataclasses, checking every key and type on the way.

Generic: the fields and their types come from the dataclasses (typing.get_type_hints), so
a new field needs no code here. Supported hints: int, float, str, bool, dict, list[X],
X | None and nested dataclasses. Ints are accepted for floats; bools are not ints.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable
from typing import Any

from segls import ConfigError

__all__ = ["build_dataclass", "show", "type_name"]

Where = Callable[[str], str]  # key path -> the file or override that set it


def _leaf_keys(cls: type, prefix: str = "") -> list[str]:
    """Every leaf key path of a dataclass, e.g. "schedule.max_iters"."""
    keys = []
    for name, hint in typing.get_type_hints(cls).items():
        key = f"{prefix}.{name}" if prefix else name
        keys += _leaf_keys(hint, key) if dataclasses.is_dataclass(hint) else [key]
    return keys


def _suggest(name: str, cls: type, prefix: str, root: type) -> str:
    """'; did you mean ...?' for an unknown key: a close sibling, else a close key elsewhere."""
    siblings = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(name, siblings, n=1)
    if close:
        return f"; did you mean '{prefix + '.' if prefix else ''}{close[0]}'?"
    by_leaf = {key.rsplit(".", 1)[-1]: key for key in _leaf_keys(root)}
    close = difflib.get_close_matches(name, list(by_leaf), n=1)
    if close:
        return f"; did you mean '{by_leaf[close[0]]}'?"
    return f"; valid keys{' under ' + repr(prefix) if prefix else ''}: {', '.join(siblings)}"


def type_name(hint: Any) -> str:
    """Readable name of a type hint: "int", "list[float]", "float or null", "mapping"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in args)
    if origin is list:
        return f"list[{type_name(args[0])}]"
    if hint is dict or origin is dict or dataclasses.is_dataclass(hint):
        return "mapping"
    return hint.__name__


def show(value: Any) -> str:
    """A value written the way YAML spells it (null, true) or as its Python repr."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


class _Mismatch(Exception):
    """A value whose type does not fit its field; becomes a ConfigError at the top."""

    def __init__(self, key: str, value: Any, hint: Any):
        super().__init__(key)
        self.key, self.value, self.hint = key, value, hint

    def message(self, where: Where) -> str:
        """'<file>: key = value is <type>, expected <type>; <what to do>'."""
        value, expected = self.value, type_name(self.hint)
        wanted = expected.split(" or ")[0]
        if value is None:
            advice = "give a value, or delete the key to keep the default"
        elif isinstance(value, bool):
            advice = f"write a {wanted}, not true/false"
        elif isinstance(value, str) and wanted in ("int", "float"):
            advice = "write the number without quotes"
        elif wanted == "str":
            advice = "put the value in quotes"
        elif wanted == "mapping":
            advice = "write 'key: value' lines under it"
        else:
            advice = (
                f"write a {wanted}, e.g. [1, 2]"
                if wanted.startswith("list")
                else f"write a {wanted}"
            )
        got = "null" if value is None else type(value).__name__
        return (
            f"{where(self.key)}: {self.key} = {show(value)} is {got}, expected {expected}; {advice}"
        )


def _convert(value: Any, hint: Any, key: str, where: Where, root: type) -> Any:
    """Check `value` against the type hint and return it typed (ints become floats, etc.)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, where, root)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        try:
            return _convert(value, inner, key, where, root)
        except _Mismatch as mismatch:
            if mismatch.key != key:
                raise
            raise _Mismatch(key, value, hint) from None
    if origin is list and isinstance(value, list):
        return [_convert(item, args[0], f"{key}[{i}]", where, root) for i, item in enumerate(value)]
    if (hint is dict or origin is dict) and isinstance(value, dict):
        return dict(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise _Mismatch(key, value, hint)


def _build(cls: type, raw: Any, prefix: str, where: Where, root: type) -> Any:
    """Make dataclass `cls` from a mapping; missing keys keep their defaults, null means {}."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise _Mismatch(prefix, raw, cls)
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in hints:
            suggestion = _suggest(str(name), cls, prefix, root)
            raise ConfigError(f"{where(key)}: unknown key '{key}'{suggestion}")
        values[name] = _convert(value, hints[name], key, where, root)
    return cls(**values)


def build_dataclass(cls: type, raw: Any, where: Where) -> Any:
    """Typed instance of dataclass `cls` from a nested mapping; ConfigError on any bad key/type."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where('')}: expected a mapping of sections, got {show(raw)}")
    try:
        return _build(cls, raw, "", where, cls)
    except _Mismatch as mismatch:
        raise ConfigError(mismatch.message(where)) from None
