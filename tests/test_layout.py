"""Tests of the layout itself: which room imports which, function sizes, thin tools."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

# The rooms of segls from the bottom up; a room imports only rooms in lower layers.
# "segls" is the package itself (__version__, ConfigError, NonFiniteError); "lazy" its
# packages' lazy exports.
LAYERS = [
    {"segls", "io", "lazy", "losses", "metrics"},
    {"runtime"},
    {"data", "models"},
    {"config"},
    {"predict"},
    {"train"},
    {"bench", "plan"},
    {"cli"},
]
PACKAGE_NAMES = ("ConfigError", "NonFiniteError", "__version__")
MAX_FUNCTION_LINES = 80
LONGER_FUNCTIONS = {  # the Triton kernels
    "segls/losses/_triton.py:_label_smooth_ce_kernel",
    "segls/losses/_upsample_triton.py:_upsample_ce_forward_kernel",
}


def _module(path: Path) -> str:
    """The dotted name of a module file under the repository root."""
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _room(module: str) -> str:
    """The room (sub-package or top module of segls) a dotted name lies in."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports_that_run(path: Path) -> set[str]:
    """The segls modules a file imports, leaving out imports for type hints only.

    ``from segls import X`` counts as ``segls.X`` (a submodule, or a name of the package).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    hints_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for inner in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in hints_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] == "segls"}


def room_imports() -> dict[str, set[str]]:
    """Room -> the other rooms its modules import when they run."""
    rooms: dict[str, set[str]] = {}
    for path in sorted((REPO_ROOT / "segls").rglob("*.py")):
        room = _room(_module(path))
        imported = {_room(name) for name in imports_that_run(path)}
        rooms.setdefault(room, set()).update(imported - {room})
    return rooms


def test_every_room_is_placed_in_a_layer():
    placed = set().union(*LAYERS)
    assert set(room_imports()) - set(PACKAGE_NAMES) <= placed


def test_no_room_imports_a_room_above_or_beside_it():
    layer_of = {room: index for index, layer in enumerate(LAYERS) for room in layer}
    for name in PACKAGE_NAMES:
        layer_of[name] = 0
    upward = sorted(
        f"{room} -> {other}"
        for room, others in room_imports().items()
        for other in others
        if layer_of[other] >= layer_of[room]
    )
    assert upward == []


def test_losses_and_metrics_stand_alone():
    for room in ("losses", "metrics", "io"):
        for path in (REPO_ROOT / "segls").glob(f"{room}*"):
            files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
            for file in files:
                outside = {name for name in imports_that_run(file) if _room(name) != room}
                assert outside == set(), (file, outside)


def test_the_scan_sees_imports_that_run_and_not_those_for_hints(tmp_path):
    source = tmp_path / "example.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from segls import io\n"
        "import segls.data.loaders\n"
        "if TYPE_CHECKING:\n"
        "    from segls.config import Config\n"
        "def f():\n"
        "    from segls.train import train\n"
    )
    assert imports_that_run(source) == {"segls.io", "segls.data.loaders", "segls.train.train"}


def function_lengths(path: Path) -> dict[str, int]:
    """Lines of every function in a file (decorators included), by "path:name"."""
    name = path.relative_to(REPO_ROOT).as_posix()
    lengths = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            lengths[f"{name}:{node.name}"] = node.end_lineno - first + 1
    return lengths


def test_no_function_in_segls_is_longer_than_80_lines():
    lengths = {}
    for path in sorted((REPO_ROOT / "segls").rglob("*.py")):
        lengths.update(function_lengths(path))
    too_long = {key: n for key, n in lengths.items() if n > MAX_FUNCTION_LINES}
    assert set(too_long) == LONGER_FUNCTIONS, too_long
    assert len(lengths) > 300  # the scan did read the package


def test_tools_are_thin():
    for path in sorted((REPO_ROOT / "tools").glob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        assert len(lines) <= MAX_FUNCTION_LINES, path
        assert f"from segls.cli.{path.stem} import run" in lines, path


def test_lazy_packages_export_every_name_they_list_and_agree_with_their_names_modules():
    import importlib

    for package in ("segls.data", "segls.models", "segls.runtime", "segls.losses"):
        module = importlib.import_module(package)
        for name in module.__all__:
            assert getattr(module, name) is not None, (package, name)
    from segls.data.layouts import LAYOUTS
    from segls.data.names import LAYOUT_NAMES
    from segls.runtime.device import AMP_DTYPES
    from segls.runtime.names import AMP_MODES

    assert tuple(LAYOUTS) == LAYOUT_NAMES
    assert tuple(AMP_DTYPES) == AMP_MODES
    assert list(AMP_DTYPES.values()) == [None, torch.float16, torch.bfloat16]


def _losses_module_imports() -> dict[str, set[str]]:
    """Each module of segls.losses -> the losses modules it imports, inside functions too."""
    modules = {_module(path): path for path in sorted((REPO_ROOT / "segls/losses").glob("*.py"))}
    imports = {}
    for module, path in modules.items():
        found = set()
        for name in imports_that_run(path):
            while name and name not in modules:  # "segls.losses._triton.check_device"
                name = name.rpartition(".")[0]
            if name and name not in (module, "segls.losses"):
                found.add(name)
        imports[module] = found
    return imports


def test_no_losses_module_imports_one_that_imports_it_back():
    imports = _losses_module_imports()
    assert "segls.losses._upsample_triton" in imports["segls.losses._upsample"]  # the scan sees it
    reached = {}
    for module in imports:  # every module a module reaches, through any chain of imports
        seen, todo = set(), list(imports[module])
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += imports[name]
        reached[module] = seen
    circles = sorted(
        f"{module} -> {other}"
        for module in imports
        for other in reached[module]
        if module in reached[other]
    )
    assert circles == []
