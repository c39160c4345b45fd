"""The work dir's rules: checked before a run writes anything; another run's records never lost.

A run keeps its records (train.log, metrics.jsonl, TensorBoard events, config.yaml) and its
checkpoints in one directory. `check_work_dir` runs before anything is built or written: the
directory must be one (not a file) that this process can write, and a fresh run is refused
when the directory holds another run's checkpoints, metrics or TensorBoard events, unless
``overwrite`` (``--overwrite``) says to delete them; `clear_records` does that once the new
run has been built and checked. A write that fails later (a full disk) becomes one
`WorkDirError` line naming the file and what to do (`cannot_write`). While a run lives, the
lock of `segls.train.lock` keeps any other run out of its work dir.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from segls import io

__all__ = [
    "RECORDS",
    "WorkDirError",
    "cannot_write",
    "check_work_dir",
    "check_writable",
    "clear_records",
    "drop_unsaved_records",
]

# What marks a directory as holding a run: its checkpoints, evaluations, TensorBoard events.
RECORDS = ("latest.pth", "best.pth", "metrics.jsonl", "events.out.tfevents.*")
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


class WorkDirError(RuntimeError):
    """The work dir cannot be used: a file, read-only, full, or holding another run's records."""


def _existing_base(work_dir: Path) -> Path:
    """`work_dir`, or its nearest ancestor that exists (where it would be created)."""
    for path in (work_dir, *work_dir.parents):
        if path.exists():
            return path
    return Path.cwd()


def _records(work_dir: Path) -> list[Path]:
    """The files in `work_dir` that show a run was recorded there (empty ones do not)."""
    if not work_dir.is_dir():
        return []
    found = {path for pattern in RECORDS for path in work_dir.glob(pattern) if path.is_file()}
    return sorted(path for path in found if path.stat().st_size > 0)


def check_writable(work_dir: str | os.PathLike) -> None:
    """Raise WorkDirError unless `work_dir` is (or can be made) a directory this process writes."""
    work_dir = Path(work_dir)
    base = _existing_base(work_dir)
    if not base.is_dir():
        raise WorkDirError(
            f"work dir {work_dir}: {base} is a file, not a directory; pass another --work-dir "
            "or move the file away"
        )
    if not os.access(base, os.W_OK | os.X_OK):
        raise WorkDirError(
            f"work dir {work_dir}: {base} is read-only for this process; pass a writable "
            "--work-dir or make it writable"
        )


def check_work_dir(work_dir: str | os.PathLike, fresh: bool, overwrite: bool) -> list[Path]:
    """Raise WorkDirError unless a run may record into `work_dir`; nothing is written here.

    A `fresh` run (not resumed) into a directory holding another run's records needs
    `overwrite`; returns those records (for `clear_records`), or [] when there are none.
    """
    work_dir = Path(work_dir)
    check_writable(work_dir)
    records = _records(work_dir) if fresh else []
    if records and not overwrite:
        names = ", ".join(path.name for path in records[:4])
        more = f" and {len(records) - 4} more" if len(records) > 4 else ""
        if not _checkpoints(work_dir):
            raise WorkDirError(
                f"{work_dir} holds the records of a run that stopped before its first "
                f"checkpoint ({names}{more}), which cannot be resumed; pass --overwrite to "
                "delete them and start afresh, or pass another --work-dir"
            )
        raise WorkDirError(
            f"{work_dir} holds another run's records ({names}{more}); continue that run with "
            "--resume, pass another --work-dir, or pass --overwrite to delete them and start afresh"
        )
    return records


def _checkpoints(work_dir: Path) -> list[Path]:
    """The checkpoint files in `work_dir` (what --resume could continue from)."""
    return sorted(path for path in work_dir.glob("*.pth") if path.is_file())


def drop_unsaved_records(work_dir: str | os.PathLike) -> str | None:
    """Delete the records of a fresh run that ended before its first checkpoint.

    Nothing can resume such a run, and its records would only make a plain rerun refused
    ("holds another run's records") while ``--resume`` finds no checkpoint: a circle. Its
    train.log stays, with the error. Returns the line to add to train.log (None: nothing
    deleted, e.g. a checkpoint exists).
    """
    work_dir = Path(work_dir)
    records = _records(work_dir)
    if not records or _checkpoints(work_dir):
        return None
    io.remove_files(records)
    names = ", ".join(path.name for path in records)
    return (
        f"no checkpoint was written, so this run cannot be resumed: deleted its records "
        f"({names}) so that the same command starts it again"
    )


def clear_records(work_dir: str | os.PathLike, records: list[Path]) -> None:
    """Delete a previous run's `records` and its train.log (a fresh run with ``--overwrite``)."""
    io.remove_files([*records, Path(work_dir) / "train.log"])


def cannot_write(path: str | os.PathLike, error: OSError) -> WorkDirError:
    """The one-line WorkDirError for a failed write of `path`, saying what to do."""
    reason = error.strerror or str(error)
    if error.errno == errno.ENOSPC:
        advice = (
            "free some space (the files written before are intact), then continue with --resume"
        )
    elif error.errno in _READ_ONLY:
        advice = "pass a writable --work-dir or make it writable"
    else:
        advice = "check the file system, then continue with --resume"
    return WorkDirError(f"cannot write {path}: {reason}; {advice}")
