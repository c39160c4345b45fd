"""Tests of segls.io, the one writer: atomic replaces, permissions, temp-file clean-up."""

from __future__ import annotations

import ast
import errno
import os
import stat
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import FullDisk
from PIL import Image

from segls import io

REPO_ROOT = Path(__file__).resolve().parents[1]

# Calls that create, replace or delete files, by the name they are called through.
WRITE_CALLS = {
    "torch.save": "torch.save",
    "torch.onnx.export": "torch.onnx.export",
    "json.dump": "json.dump",
    "os.replace": "os.replace/rename",
    "os.rename": "os.replace/rename",
    "os.remove": "file removal",
    "os.unlink": "file removal",
    "shutil.rmtree": "file removal",
    "shutil.move": "file removal",
    "SummaryWriter": "TensorBoard writer",
}
WRITE_METHODS = {
    "write_bytes": "Path.write_bytes/write_text",
    "write_text": "Path.write_bytes/write_text",
    "unlink": "file removal",
    "imwrite": "image writer",
    "imsave": "image writer",
}

# Every place outside segls/io.py that writes to the file system (segls/, benchmarks/, tools/),
# and why it may.
ALLOWED_WRITERS = {
    ("segls/train/smoothing.py", "TensorBoard writer"): "TensorBoard appends its own event files",
    ("segls/train/logger.py", "TensorBoard writer"): "TensorBoard appends its own event files",
    ("segls/predict/export.py", "torch.onnx.export"): "into the temporary path io hands it",
    ("segls/data/sample.py", "image writer"): "tifffile encodes into an in-memory buffer",
    ("benchmarks/memory.py", "open for writing"): "/proc/self/clear_refs resets the peak RSS",
    ("segls/plan/timing.py", "torch.save"): "into an in-memory buffer, to time a checkpoint",
    ("segls/train/lock.py", "file removal"): "the lock file, removed as the run lets it go",
    (
        "benchmarks/tensorboard_view.py",
        "temporary files",
    ): "Chromium's fresh profile, removed after",
}


def _dotted(node: ast.expr) -> str:
    """ "torch.onnx.export" for the expression torch.onnx.export, "" for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _opens_for_writing(call: ast.Call) -> bool:
    """Whether a call to open() passes a mode that writes (w, a, x or +)."""
    modes = [*call.args[1:2], *(k.value for k in call.keywords if k.arg == "mode")]
    return any(
        isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax+") for mode in modes
    )


def writers(text: str) -> set[str]:
    """The kinds of write call in a Python source text (strings and comments do not count)."""
    found = set()
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name in ("open", "os.fdopen") and _opens_for_writing(node):
            found.add("open for writing")
        elif name.startswith("tempfile."):
            found.add("temporary files")
        elif name in WRITE_CALLS or name.rpartition(".")[2] == "SummaryWriter":
            found.add(WRITE_CALLS.get(name, "TensorBoard writer"))
        elif isinstance(node.func, ast.Attribute) and node.func.attr in WRITE_METHODS:
            found.add(WRITE_METHODS[node.func.attr])
    return found


def test_the_scan_finds_each_kind_of_write_call():
    examples = {
        "open for writing": 'open(path, "w")',
        "Path.write_bytes/write_text": "path.write_text(text)",
        "torch.save": "torch.save(state, path)",
        "torch.onnx.export": "torch.onnx.export(model, args, path)",
        "json.dump": "json.dump(data, handle)",
        "image writer": "cv2.imwrite(path, image)",
        "os.replace/rename": "os.replace(a, b)",
        "file removal": "path.unlink()",
        "temporary files": "tempfile.mkstemp()",
        "TensorBoard writer": "SummaryWriter(log_dir)",
    }
    for kind, line in examples.items():
        assert writers(line) == {kind}, line
    quiet = 'open(path)\nopen(path, "rb")\njson.dumps(data)\nraise ValueError("torch.save(x, p)")'
    assert writers(quiet) == set()


def test_only_segls_io_writes_files_apart_from_the_listed_exceptions():
    found = set()
    code = ["segls/**/*.py", "benchmarks/**/*.py", "tools/*.py"]
    for path in sorted(path for pattern in code for path in REPO_ROOT.glob(pattern)):
        name = path.relative_to(REPO_ROOT).as_posix()
        if name != "segls/io.py":
            found |= {(name, kind) for kind in writers(path.read_text(encoding="utf-8"))}
    assert found == set(ALLOWED_WRITERS)
    assert writers((REPO_ROOT / "segls" / "io.py").read_text()) >= {
        "open for writing", "os.replace/rename", "torch.save", "temporary files",
    }  # fmt: skip


def test_write_torch_round_trip_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "sub" / "state.pth"
    state = {"weights": torch.arange(6.0).view(2, 3), "iter": 7, "names": ["a", "b"], "x": None}
    io.write_torch(path, state)
    io.write_torch(path, {**state, "iter": 8})
    loaded = torch.load(path, weights_only=True)
    assert loaded["iter"] == 8 and loaded["names"] == ["a", "b"] and loaded["x"] is None
    assert torch.equal(loaded["weights"], state["weights"])
    assert os.listdir(path.parent) == ["state.pth"]


def test_write_torch_permissions_follow_the_umask(tmp_path):
    old_umask = os.umask(0o022)
    try:
        io.write_torch(tmp_path / "c.pth", {"a": 1})
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "c.pth").stat().st_mode) == 0o644


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path):
    path = tmp_path / "latest.pth"
    io.write_torch(path, {"iter": 1})
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises for a lambda
        io.write_torch(path, {"iter": 2, "bad": lambda: None})
    assert torch.load(path, weights_only=True) == {"iter": 1}
    assert os.listdir(tmp_path) == ["latest.pth"]


def test_only_the_temporary_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".latest.pth.{dead.pid}.0123abcd.tmp"
    alive = tmp_path / f".best.pth.{os.getpid()}.0123abcd.tmp"
    other = tmp_path / "notes.tmp"
    for path in (stale, alive, other):
        path.write_bytes(b"half")
    assert io.remove_stale_temp_files(tmp_path) == [stale]
    assert not stale.exists() and alive.exists() and other.exists()


def test_write_torch_keeps_a_crc32_of_its_bytes_that_read_torch_checks(tmp_path):
    path = tmp_path / "state.pth"
    io.write_torch(path, {"weights": torch.arange(5000.0), "iter": 3})
    assert torch.load(path, weights_only=True)["iter"] == 3  # still a plain torch file
    data = path.read_bytes()
    comment = zipfile.ZipFile(path).comment  # the zip comment, read by the zipfile module
    assert comment.startswith(b"segls-crc32:") and data.endswith(comment)
    # The CRC-32 of the bytes torch.save wrote: the file without the comment, whose length
    # field (the last 2 bytes of the zip end record) torch wrote as 0.
    written = data[: -len(comment) - 2] + b"\0\0"
    assert comment == b"segls-crc32:%08x" % zlib.crc32(written)
    assert io.read_torch(path)["iter"] == 3

    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0x01  # one bit, inside the tensor's bytes
    path.write_bytes(bytes(damaged))
    assert torch.load(path, weights_only=True)["iter"] == 3  # torch does not notice
    with pytest.raises(io.UnreadableFileError, match="state.pth: its contents do not match"):
        io.read_torch(path)
    plain = tmp_path / "plain.pth"
    torch.save({"iter": 4}, plain)  # written by torch itself: no checksum to check
    assert io.read_torch(plain)["iter"] == 4


def test_a_full_disk_raises_the_os_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "latest.pth"
    io.write_torch(path, {"iter": 1})
    before = path.read_bytes()
    real_open = io._open_new
    monkeypatch.setattr(io, "_open_new", lambda temp: FullDisk(real_open(temp), room=1000))
    with pytest.raises(OSError) as error:
        io.write_torch(path, {"iter": 2, "weights": torch.zeros(10_000)})
    assert error.value.errno == errno.ENOSPC  # not torch's "unexpected pos"
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pth"]


def test_an_image_written_in_bands_of_rows_decodes_to_its_pixels_and_nothing_is_left_on_error(
    tmp_path,
):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 41, 3), dtype=np.uint8)
    image[:, 20:] = [200, 10, 250]  # flat runs, where the "Sub" filter gives zeros
    path = tmp_path / "banded.png"
    io.write_png_rows(path, (37, 41), (image[top : top + 8] for top in range(0, 37, 8)))
    assert np.array_equal(np.array(Image.open(path)), image)
    assert np.array_equal(cv2.imread(str(path))[..., ::-1], image)
    with pytest.raises(ValueError, match="expected 40 rows, got 37"):
        io.write_png_rows(tmp_path / "short.png", (40, 41), [image])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["banded.png"]
