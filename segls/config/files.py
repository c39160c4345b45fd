"""YAML side of the config system: reading files with `_base_` inheritance, overrides, writing.

Everything here works on plain dicts; `segls.config.convert` turns them into dataclasses.
While merging, every key path is mapped to the file (or command-line override) that set it
last, so validation errors can name the place to fix.

The loader is `yaml.SafeLoader` with two YAML 1.2 scalar rules, because the YAML 1.1 rules
bite in exactly this kind of file: only true/false are booleans (so ``amp: off`` stays the
string "off" and a class called ``no`` stays a name), and ``1e-3`` is a float, not a string.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from segls import ConfigError
from segls.io import write_text

__all__ = [
    "dump_yaml",
    "merge_into",
    "parse_override",
    "read_config_tree",
    "where_set",
    "yaml_text",
]

_BOOL_TAG = "tag:yaml.org,2002:bool"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_EXPONENT_FLOAT_RE = re.compile(
    r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"
)
_OVERRIDE_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
OVERRIDE_FORM = "key.path=value, e.g. schedule.max_iters=2000 or data.crop_size=[256,256]"


# Bounds that no config comes near, so that a hostile or broken file fails at once: PyYAML
# composes nested nodes recursively (5,000 levels: a RecursionError), and aliases share one
# node however often they repeat (a "billion laughs" file is small, its expansion is not).
MAX_DEPTH = 100
MAX_NODES = 100_000


class _Refused(Exception):
    """A YAML document the loader will not build: too deep, or too large once expanded."""


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans (true/false only) and exponent floats such as 1e-3.

    It also refuses nesting deeper than MAX_DEPTH and documents whose aliases expand to more
    than MAX_NODES nodes (`_Refused`).
    """

    _depth = 0

    def fetch_flow_collection_start(self, TokenClass: type) -> None:  # noqa: N803 (PyYAML's)
        if self.flow_level >= MAX_DEPTH:  # before the scanner slows down on deep [[[...
            raise _Refused(f"line {self.line + 1}: nested more than {MAX_DEPTH} levels deep")
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise _Refused(f"line {line}: nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                key_node, yaml.ScalarNode
            ):
                continue
            key, line = self.construct_object(key_node), key_node.start_mark.line + 1
            if key in seen:
                raise _Refused(
                    f"line {line}: the key {key!r} is given twice (also on line {seen[key]}), "
                    "and only the last would count; remove one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep)

    def construct_document(self, node: yaml.Node) -> Any:
        if _expanded_size(node, {}) > MAX_NODES:
            raise _Refused(
                f"its anchors and aliases (&name, *name) expand to more than {MAX_NODES:,} "
                "values; write the values out, or use fewer aliases"
            )
        return super().construct_document(node)


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many nodes `node` stands for with every alias written out (each node counted once)."""
    known = sizes.get(id(node))
    if known is not None:
        if known < 0:
            line = node.start_mark.line + 1
            raise _Refused(f"line {line}: an alias refers to the collection that holds it")
        return known
    sizes[id(node)] = -1
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, sizes) for item in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(
            _expanded_size(key, sizes) + _expanded_size(value, sizes) for key, value in node.value
        )
    else:
        size = 1
    sizes[id(node)] = min(size, MAX_NODES + 1)
    return size


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, _BOOL_RE, list("tTfF"))
_Loader.add_implicit_resolver(_FLOAT_TAG, _EXPONENT_FLOAT_RE, list("-+0123456789."))


class _Dumper(yaml.SafeDumper):
    """SafeDumper that also quotes strings our loader would read as floats (e.g. "1e-3")."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def represent_list(self, data: list) -> yaml.Node:
        """Lists of scalars on one line ([512, 512]); lists of lists one item per line."""
        flow = not any(isinstance(item, (list, dict)) for item in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)

    def represent_text(self, data: str) -> yaml.Node:
        """Strings with NEL or Unicode line/paragraph separators double-quoted, so they survive."""
        style = '"' if any(ch in data for ch in "\x85\u2028\u2029") else None
        return self.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(list, _Dumper.represent_list)
_Dumper.add_representer(str, _Dumper.represent_text)
_Dumper.add_implicit_resolver(_FLOAT_TAG, _EXPONENT_FLOAT_RE, list("-+0123456789."))


def _display(path: Path) -> str:
    """Path relative to the working directory when it lies below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _one_line(error: yaml.YAMLError) -> str:
    """A PyYAML error as one line: what is wrong and where (its str() spans several lines)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or " ".join(str(error).split())
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"


def _read_mapping(path: Path) -> dict:
    """Parse one YAML file whose top level must be a mapping (an empty file is {})."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read config file {_display(path)}: {error.strerror}") from None
    if b"\0" in raw:
        raise ConfigError(f"{_display(path)} is a binary file, not a YAML config; check the path")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{_display(path)} is not UTF-8 text (byte 0x{raw[error.start]:02x} at offset "
            f"{error.start}); save it as UTF-8"
        ) from None
    try:
        data = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except _Refused as error:
        raise ConfigError(f"{_display(path)}: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{_display(path)} is not valid YAML: {_one_line(error)}") from None
    if data is None:
        raise ConfigError(
            f"{_display(path)} is empty (or holds only comments); give the keys to set, or "
            "_base_: a config to start from (configs/README.md)"
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"{_display(path)}: the top level is a {type(data).__name__}, expected a mapping "
            "of sections (data:, model:, loss:, optimizer:, schedule:, runtime:)"
        )
    return data


def merge_into(
    tree: dict, update: dict, source: str, sources: dict[str, str], prefix: str = ""
) -> None:
    """Deep-merge `update` into `tree` in place and record `source` for every key path it sets.

    Mappings merge key by key, anything else (lists included) replaces. A mapping holding
    ``_delete_: true`` replaces the mapping it lands on instead of merging into it.
    """
    for name, value in update.items():
        if name == "_delete_":
            continue
        key = f"{prefix}.{name}" if prefix else str(name)
        sources[key] = source
        if isinstance(value, dict):
            if value.get("_delete_") is True or not isinstance(tree.get(name), dict):
                tree[name] = {}
            merge_into(tree[name], value, source, sources, key)
        else:
            tree[name] = value


def _apply_file(path: Path, tree: dict, sources: dict[str, str], chain: list[Path]) -> None:
    """Merge the bases of `path` (in order, each with its own bases), then `path` itself."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(_display(p) for p in [*chain[chain.index(path) :], path])
        raise ConfigError(f"_base_ cycle: {cycle}; remove one of these _base_ entries")
    raw = _read_mapping(path)
    bases = raw.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(base, str) for base in bases):
        raise ConfigError(
            f"{_display(path)}: _base_ = {bases!r} must be a file path or a list of file paths"
        )
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            raise ConfigError(
                f"{_display(path)}: _base_ file {base!r} not found (looked at "
                f"{_display(base_path.resolve())}); _base_ paths are relative to the file "
                "that names them"
            )
        _apply_file(base_path, tree, sources, [*chain, path])
    merge_into(tree, raw, _display(path), sources)


def read_config_tree(path: str | os.PathLike) -> tuple[dict, dict[str, str]]:
    """Read a config file with all its `_base_` files merged; return (tree, key path -> source)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found; check the path")
    tree: dict = {}
    sources: dict[str, str] = {}
    _apply_file(path, tree, sources, [])
    return tree, sources


def parse_override(text: str) -> tuple[dict, str]:
    """Turn "a.b=value" into the nested mapping {"a": {"b": value}} and a source label."""
    key, sep, raw_value = text.partition("=")
    key = key.strip()
    if not sep or not _OVERRIDE_KEY_RE.fullmatch(key):
        raise ConfigError(f"malformed override {text!r}: expected {OVERRIDE_FORM}")
    try:
        value = yaml.load(raw_value, Loader=_Loader)  # _Loader is a SafeLoader
    except _Refused as error:
        raise ConfigError(f"override {key}=...: {error}") from None
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(
            f"override {text!r}: the value {raw_value!r} is not valid YAML ({problem}); "
            "quote strings that contain ':', '#' or brackets"
        ) from None
    for part in reversed(key.split(".")):
        value = {part: value}
    return value, f"command-line override {text!r}"


def where_set(sources: dict[str, str], key: str) -> str:
    """The file or override that set `key` (list indices ignored), or "default" if none did."""
    return sources.get(key.split("[", 1)[0], "default")


def yaml_text(data: dict) -> str:
    """`data` as the YAML text `dump_yaml` writes."""
    return yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )


def dump_yaml(data: dict, path: str | os.PathLike) -> None:
    """Write `data` as YAML, atomically (`segls.io.write_text`)."""
    write_text(path, yaml_text(data))
