"""Atomic file writes: a file on disk is either the old one or the new one, never half.

Every file segls writes (checkpoints, masks, plots, reports, the prepared sample) goes
through `write_atomic`: the data goes to a temporary file beside the destination, named
``.<name>.<pid>.<random>.tmp`` (so `segls.checkpoint.remove_stale_temp_files` can tell a dead
writer's leftovers from a live one's), is flushed to disk, and replaces the destination in one
``os.replace``; then the directory entry is flushed too. Standard library only.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["write_atomic", "write_bytes_atomic", "write_text_atomic"]


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Create or replace `path` with what `write` writes into the binary file it is given.

    The parent directory is created if needed. If `write` raises (or the process is killed),
    `path` is left as it was and the temporary file is removed (or, after a kill, left for
    `segls.checkpoint.remove_stale_temp_files`). New files get the usual umask permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp_path = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    # os.open with 0o666 lets the umask set the permissions, as for any other new file.
    descriptor = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Create or replace `path` with `data`, atomically (see `write_atomic`)."""
    write_atomic(path, lambda handle: handle.write(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Create or replace `path` with `text` as UTF-8, atomically (see `write_atomic`)."""
    write_bytes_atomic(path, text.encode("utf-8"))
