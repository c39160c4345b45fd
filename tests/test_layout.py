"""Tests of the layout itself: which room imports which, function sizes, thin tools, and
benchmarks/ (beside segls/, not installed) kept apart from the package."""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

# The rooms of segls from the bottom up; a room imports only rooms in lower layers.
# "segls" is the package itself (__version__, ConfigError, NonFiniteError); "lazy" its
# packages' lazy exports.
LAYERS = [
    {"segls", "io", "lazy", "losses", "metrics"},
    {"runtime", "integrations"},
    {"data", "models"},
    {"config"},
    {"predict"},
    {"train"},
    {"plan"},
    {"cli"},
]
PACKAGE_NAMES = ("ConfigError", "NonFiniteError", "__version__")
# The tools whose command lines live in benchmarks/cli/ rather than segls/cli/.
BENCHMARK_TOOLS = {
    "bench_loss", "bench_loss_gpu", "bench_startup", "bench_train", "bench_upsample",
    "check_tensorboard", "gpu_check", "make_devsuite", "plan_study",
}  # fmt: skip
# The segls modules benchmarks/ imports: public ones, the command lines' shared helpers, the
# training internals the throughput and sync harnesses step, and the Triton kernel's module,
# whose 64-bit index threshold the GPU check lowers in smoke mode; the development suite
# names classes.txt and writes TIFFs as the bundled sample's converter does.
BENCHMARKS_USE = {
    "segls", "segls.cli.common", "segls.config", "segls.data.classes", "segls.data.sample",
    "segls.data.fingerprint", "segls.data.inventory", "segls.io", "segls.losses",
    "segls.losses._triton", "segls.models", "segls.models.names", "segls.predict",
    "segls.runtime", "segls.train", "segls.train.logger", "segls.train.loop",
    "segls.train.optim",
}  # fmt: skip
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


def imports_that_run(path: Path, package: str = "segls") -> set[str]:
    """The `package` modules a file imports, leaving out imports for type hints only.

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
    return {name for name in found if name.split(".")[0] == package}


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


# Prediction never imports training: test, infer and export read weights through
# segls.models.checkpoint. The inference commands and everything they import, followed
# from module to module.
INFERENCE_ENTRY_POINTS = (
    "segls.predict",
    "segls.cli.test",
    "segls.cli.infer",
    "segls.cli.export",
    "segls.cli.inference",
)


def _module_file(module: str) -> Path | None:
    """The file of a segls module (a package's __init__.py), or None when it is a name."""
    base = REPO_ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _lazy_sources(path: Path) -> set[str]:
    """The submodules a lazy package's ``_SOURCES`` names: any may load on attribute access."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "_SOURCES":
            return {value.value for value in node.value.values}
    return set()


def modules_imported_from(entry_points: tuple[str, ...]) -> set[str]:
    """Every segls module that the `entry_points` import, directly or through others.

    An import of ``segls.a.b`` runs the packages ``segls`` and ``segls.a`` first;
    ``from segls.a import name`` imports the module ``segls.a.name`` when there is one,
    else ``segls.a``; a lazy package brings every module its ``_SOURCES`` names.
    """
    seen: set[str] = set()
    pending = list(entry_points)
    while pending:
        module = pending.pop()
        path = _module_file(module)
        if path is None:
            module = module.rpartition(".")[0]  # a name defined in its package
            path = _module_file(module)
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        pending += [".".join(parts[:end]) for end in range(1, len(parts))]
        pending += sorted(imports_that_run(path))
        if path.name == "__init__.py":
            pending += [f"{module}.{name}" for name in sorted(_lazy_sources(path))]
    return seen


def test_prediction_and_the_inference_commands_import_nothing_from_training():
    imported = modules_imported_from(INFERENCE_ENTRY_POINTS)
    assert {"segls.cli.common", "segls.models.checkpoint", "segls.predict.files"} <= imported
    assert sorted(name for name in imported if _room(name) == "train") == []


def test_the_import_closure_follows_packages_names_and_lazy_exports():
    imported = modules_imported_from(("segls.cli.inference",))
    assert {"segls", "segls.cli", "segls.models", "segls.models.checkpoint"} <= imported
    assert "segls.models.factory" in imported  # `build_model`, a lazy export of segls.models
    assert "segls.runtime.device" in imported  # through the lazy package segls.runtime
    trained = modules_imported_from(("segls.cli.train",))
    assert "segls.train.loop" in trained and "segls.train.checkpoint" in trained


def test_the_inference_commands_load_without_training_at_run_time():
    import subprocess
    import sys

    modules = [*INFERENCE_ENTRY_POINTS, "segls.predict.files", "segls.predict.export"]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('segls.train')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )
    assert done.stdout.strip() == "[]", done.stderr


def function_lengths(path: Path) -> dict[str, int]:
    """Lines of every function in a file (decorators included), by "path:name"."""
    name = path.relative_to(REPO_ROOT).as_posix()
    lengths = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            lengths[f"{name}:{node.name}"] = node.end_lineno - first + 1
    return lengths


def test_no_function_in_segls_or_benchmarks_is_longer_than_80_lines():
    lengths = {}
    for path in sorted([*REPO_ROOT.glob("segls/**/*.py"), *REPO_ROOT.glob("benchmarks/**/*.py")]):
        lengths.update(function_lengths(path))
    too_long = {key: n for key, n in lengths.items() if n > MAX_FUNCTION_LINES}
    assert set(too_long) == LONGER_FUNCTIONS, too_long
    assert len(lengths) > 300  # the scan did read the package


# Tools whose command line lives outside segls (measurement code users never import).
def test_tools_are_thin():
    for path in sorted((REPO_ROOT / "tools").glob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        assert len(lines) <= MAX_FUNCTION_LINES, path
        if path.stem in BENCHMARK_TOOLS:  # after putting the repository on sys.path
            assert f"from benchmarks.cli.{path.stem} import run  # noqa: E402" in lines, path
        else:
            assert f"from segls.cli.{path.stem} import run" in lines, path


def _module_of(name: str) -> str:
    """The module an imported dotted name lies in (``segls.io.write_json`` -> ``segls.io``)."""
    parts = name.split(".")
    while len(parts) > 1 and not any(
        (REPO_ROOT.joinpath(*parts[:-1]) / tail).is_file()
        for tail in (f"{parts[-1]}.py", f"{parts[-1]}/__init__.py")
    ):
        parts.pop()
    return ".".join(parts)


def test_segls_holds_no_benchmark_code_and_never_imports_benchmarks():
    rooms = {_room(_module(path)) for path in (REPO_ROOT / "segls").rglob("*.py")}
    assert "bench" not in rooms and "gpu_check" not in rooms
    commands = {path.stem for path in (REPO_ROOT / "segls" / "cli").glob("*.py")}
    assert commands & BENCHMARK_TOOLS == set()
    assert BENCHMARK_TOOLS <= {path.stem for path in (REPO_ROOT / "benchmarks/cli").glob("*.py")}
    for path in sorted((REPO_ROOT / "segls").rglob("*.py")):
        assert imports_that_run(path, "benchmarks") == set(), path
    setup = configparser.ConfigParser(interpolation=None)
    setup.read(REPO_ROOT / "setup.cfg")
    installed = setup["options.packages.find"]["include"]
    assert installed.split(", ") == ["segls", "segls.*"]  # benchmarks/ is not installed


def test_benchmarks_import_segls_only_through_the_modules_they_use_today():
    used = {
        _module_of(name)
        for path in sorted((REPO_ROOT / "benchmarks").rglob("*.py"))
        for name in imports_that_run(path)
    }
    assert used <= BENCHMARKS_USE, used - BENCHMARKS_USE
    assert {"segls.losses", "segls.train"} <= used  # the scan did read benchmarks/


def test_module_of_finds_the_file_an_imported_name_lies_in():
    assert _module_of("segls.io.write_json") == "segls.io"
    assert _module_of("segls.config.Config") == "segls.config"
    assert _module_of("segls.train.loop") == "segls.train.loop"
    assert _module_of("segls.__version__") == "segls"


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
