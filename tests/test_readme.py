"""Every code block of README.md and docs/*.md runs as written, offline, on tiny inputs.

Each ```python block runs in a fresh namespace after `PREAMBLE` (the tensors the examples
call `logits`, `labels`, `images`), with network connections refused and an empty torch
cache, so an example that downloads weights fails. (The mmseg integration's page holds only
a config dict here; tests/test_integrations_mmseg*.py run it against mmseg itself.)

Each ```bash block runs command by command from a scratch folder with a copy of configs/
and the repository's data/ and tools/ (in this process: ``python tools/<name>.py ARGS`` is
``segls.cli.<name>.run(ARGS)``): ``pip install`` is left out (the suite runs in the
installed environment), ``tensorboard --logdir DIR`` (a server) is a check that DIR holds
runs to show, and the training commands get `SHORT_RUNS` appended (2 iterations; one run of
the ε grid), so they take seconds. A block that cannot run this way is marked by
``<!-- not run: reason -->`` on the line above it; it is reported as skipped with that
reason (``pytest -rs``). Blocks of any other language (yaml, plain text) are not code and
are left alone.

Every relative link of these pages, and of configs/README.md and data/README.md, names a
file of the repository, and a ``#fragment`` names a heading of its page.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from helpers import REPO_ROOT

README = REPO_ROOT / "README.md"
MANUALS = sorted((REPO_ROOT / "docs").glob("*.md"))
PAGES = [README, *MANUALS]  # the pages whose code blocks run
LINKED_PAGES = [*PAGES, REPO_ROOT / "configs" / "README.md", REPO_ROOT / "data" / "README.md"]
PYTHON_LANGS = {"python", "py"}
SHELL_LANGS = {"bash", "sh", "shell"}
NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<reason>.+?)\s*-->")
FENCE = re.compile(r"^```(?P<lang>[\w+-]*)[^\n]*\n(?P<code>.*?)^```[ \t]*$", re.M | re.S)

PREAMBLE = """
import torch
import torchvision
import segmentation_models_pytorch as smp

torch.manual_seed(0)
images = torch.randn(2, 3, 64, 64)
logits = torch.randn(2, 19, 64, 64, requires_grad=True)
labels = torch.randint(0, 19, (2, 64, 64))
labels[:, :4] = 255  # some ignored pixels
"""

# Appended to the commands of these tools so that they train for seconds, not minutes.
_TWO_ITERATIONS = [
    "schedule.max_iters=2",
    "schedule.warmup_iters=0",
    "schedule.cooldown_iters=0",
    "schedule.eval_interval=2",
    "schedule.checkpoint_interval=2",
    "data.num_workers=0",
]
SHORT_RUNS = {
    "tools/train.py": _TWO_ITERATIONS,
    # and one point of the grid: the docs' --eps and --seeds are parsed, then replaced
    "tools/compare_smoothing.py": [*_TWO_ITERATIONS, "--eps", "0.1", "--seeds", "0"],
}


@dataclass(frozen=True)
class Block:
    """One fenced code block: its page, language, text, first line, and a not-run reason."""

    page: str
    lang: str
    code: str
    line: int
    not_run: str | None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}:{self.lang}"


def code_blocks(text: str, page: str = "README.md") -> list[Block]:
    """The python and shell blocks of a Markdown text, with the marker on the line above each."""
    blocks = []
    for match in FENCE.finditer(text):
        lang = match["lang"].lower()
        if lang not in PYTHON_LANGS | SHELL_LANGS:
            continue
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = NOT_RUN.search(before)
        line = text.count("\n", 0, match.start()) + 1
        reason = marker["reason"] if marker else None
        blocks.append(Block(page, lang, match["code"], line, reason))
    return blocks


def _page_name(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


BLOCKS = [
    block
    for path in PAGES
    for block in code_blocks(path.read_text(encoding="utf-8"), _page_name(path))
]


def shell_commands(code: str) -> list[str]:
    """The commands of a shell block: continued lines joined, comments dropped, split at &&."""
    joined = re.sub(r"\s*\\\n\s*", " ", code)
    commands = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def test_the_readme_has_runnable_blocks_and_every_marker_gives_a_reason():
    readme = [block for block in BLOCKS if block.page == "README.md"]
    assert sum(block.lang in PYTHON_LANGS and not block.not_run for block in readme) >= 1
    assert sum(block.lang in SHELL_LANGS and not block.not_run for block in readme) >= 2
    assert {block.page for block in BLOCKS} > {"README.md"}, "the manuals' blocks are collected"
    for block in BLOCKS:
        assert block.not_run is None or len(block.not_run) > 10, block.id


def test_shell_commands_are_split_as_a_shell_would():
    code = "# one\npip install -e . && python tools/train.py C \\\n    a=1  # note\n"
    assert shell_commands(code) == ["pip install -e .", "python tools/train.py C a=1"]


LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def heading_anchors(text: str) -> set[str]:
    """The fragments GitHub gives a page's headings: lower case, punctuation dropped, - for spaces."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", FENCE.sub("", text), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def relative_links(text: str) -> list[str]:
    """The targets of a page's Markdown links that are neither web addresses nor mail."""
    prose = re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))  # code is not a link
    targets = (match["target"] for match in LINK.finditer(prose))
    return [target for target in targets if not re.match(r"[a-z]+:", target)]


def test_links_are_found_as_a_reader_would_follow_them():
    text = "[a](docs/A.md#two-words) ![b](x.png) [c](https://e.org) `[d](e)`\n# Two words: `x.py`\n"
    assert relative_links(text) == ["docs/A.md#two-words", "x.png"]
    assert heading_anchors(text) == {"two-words-xpy"}


@pytest.mark.parametrize("page", LINKED_PAGES, ids=_page_name)
def test_every_relative_link_names_a_file_and_heading_that_exist(page):
    text = page.read_text(encoding="utf-8")
    for target in relative_links(text):
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{_page_name(page)}: {target!r} names no file"
        if fragment and linked.suffix == ".md":
            anchors = heading_anchors(linked.read_text(encoding="utf-8"))
            assert fragment in anchors, f"{_page_name(page)}: {target!r} names no heading"


@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if b.lang in PYTHON_LANGS], ids=lambda block: block.id
)
def test_python_block_runs(block, offline):
    if block.not_run:
        pytest.skip(f"{block.id} not run: {block.not_run}")
    namespace: dict = {}
    exec(compile(PREAMBLE, "<preamble>", "exec"), namespace)
    exec(compile(block.code, block.id, "exec"), namespace)
    losses = [value for name, value in namespace.items() if name.startswith("loss")]
    for loss in (value for value in losses if isinstance(value, torch.Tensor)):
        assert loss.ndim == 0 and torch.isfinite(loss), block.id


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A folder to run commands from, with a copy of configs/ (commands write configs there)
    and the repository's data/ and tools/."""
    folder = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO_ROOT / "configs", folder / "configs")
    for name in ("data", "tools"):
        (folder / name).symlink_to(REPO_ROOT / name)
    return folder


def _run_command(command: str) -> None:
    """Run one command of the docs, a ``python tools/<name>.py`` one, in this process.

    tools/<name>.py only calls ``segls.cli.<name>.run``, or ``benchmarks.cli.<name>.run`` for
    a benchmark (tests/test_layout.py checks that), so calling it here runs the same code
    without a second start of Python and torch.
    """
    words = shlex.split(command)
    if words[:2] == ["pip", "install"]:
        return  # the suite runs in the installed environment
    if words[:2] == ["tensorboard", "--logdir"] and len(words) == 3:
        # a server that runs until stopped: check instead that it has runs to show
        assert list(Path(words[2]).rglob("events.out.tfevents.*")), f"{command!r}: no runs"
        return
    tool = words[1] if len(words) > 1 and words[0] == "python" else ""
    if not (tool.startswith("tools/") and tool.endswith(".py") and (REPO_ROOT / tool).is_file()):
        pytest.fail(f"cannot run {command!r}: mark its block <!-- not run: reason -->")
    stem = Path(tool).stem
    package = "benchmarks" if (REPO_ROOT / "benchmarks/cli" / f"{stem}.py").is_file() else "segls"
    module = importlib.import_module(f"{package}.cli.{stem}")
    assert module.run([*words[2:], *SHORT_RUNS.get(tool, [])]) == 0, command


@pytest.mark.slow
@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang in SHELL_LANGS], ids=lambda b: b.id)
def test_shell_block_runs(block, scratch, monkeypatch, offline):
    if block.not_run:
        pytest.skip(f"{block.id} not run: {block.not_run}")
    monkeypatch.chdir(scratch)
    for command in shell_commands(block.code):
        _run_command(command)
