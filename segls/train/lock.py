"""One run per work dir: the lock a run holds on its work dir from its start to its end.

`hold_work_dir` is taken by the command lines (tools/train.py, tools/compare_smoothing.py)
before anything is built or checked, and released when the command ends. A second run, a
``--resume`` or a comparison into a held work dir is refused at once, with one line naming
the holder: pid, host, start time and command.

What it relies on. The lock is a POSIX record lock (``fcntl.lockf``) on ``.segls.lock`` in
the work dir. The operating system releases it when the holding process ends, however it
ends (kill -9, out of memory), so a killed run never blocks the next one: its leftover file
is taken over, and the new run logs whose lock it took. On NFS (v4, or v3 with lockd) the
server keeps the lock for every machine that mounts the directory, and releases the lock of
a machine that lost power once its lease runs out (90 s by default); a POSIX lock, unlike
``flock``, is also the kind NFS clients pass on to the server, and is not inherited by the
DataLoader workers a run forks. Beside the lock the file records its holder (pid, host,
process start time), which is what a refused run prints. Where the file system has no
locks (NFS mounted with ``nolock``, which makes them local to each machine, and some FUSE
file systems) the record alone decides: a holder on this host is alive when a process with
its pid and its start time runs; one on another host cannot be checked, so the run is
refused with the name of the file to delete once that run is known to be gone.

Under torchrun only rank 0 holds the lock (``RANK`` 0, or no ``RANK``): the other processes
write nothing into the work dir.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from segls.io import append_text
from segls.train.workdir import WorkDirError, cannot_write, check_writable

__all__ = ["LOCK_NAME", "WorkDirLock", "hold_work_dir"]

LOCK_NAME = ".segls.lock"
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
_HELD: set[str] = set()  # the lock files this process holds (a POSIX lock is per process)


def _boot_id() -> str:
    """This machine's boot id (Linux), so that a pid of an earlier boot never counts as alive."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks after boot (Linux), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])  # field 22 of proc(5), counted after the command name


def _start_time(pid: int) -> float:
    """The wall-clock time process `pid` started (Linux), or now where that is unknown."""
    ticks = _start_ticks(pid)
    try:
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration):
        return time.time()
    return time.time() if ticks is None else boot + ticks / os.sysconf("SC_CLK_TCK")


def _record_of_this_process() -> dict:
    """What the lock file says about its holder: this process."""
    pid = os.getpid()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(_start_time(pid)))
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300] if sys.argv else ""
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "started": started,
        "start_ticks": _start_ticks(pid),
        "boot_id": _boot_id(),
        "command": command,
    }


def _alive(record: dict) -> bool | None:
    """Whether the holder in `record` still runs: None when it is on another host (unknown)."""
    if record.get("host") != socket.gethostname():
        return None
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if record.get("boot_id") and record.get("boot_id") != _boot_id():
        return False  # the machine rebooted since: that process is gone, whatever has its pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    ticks = record.get("start_ticks")
    return ticks is None or _start_ticks(pid) in (None, ticks)  # a reused pid starts later


def _describe(record: dict) -> str:
    """The holder, for a message: pid, host, start time, command."""
    command = f" ({record['command']})" if record.get("command") else ""
    return (
        f"pid {record.get('pid', '?')} on host {record.get('host', '?')}, started "
        f"{record.get('started', '?')}{command}"
    )


def _read_record(fd: int) -> dict | None:
    """The holder record in the open lock file `fd`, or None when it is empty or unreadable."""
    data = os.pread(fd, 65536, 0)
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _holder_of(path: Path) -> dict | None:
    """The record of the process holding `path`; waits briefly for one that is being written.

    A holder that has just taken over a dead run's lock may not have replaced that run's
    record yet: a record of a process known to be gone is read again too.
    """
    deadline = time.monotonic() + 2.0
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            record = _read_record(fd)
        finally:
            os.close(fd)
        current = record is not None and _alive(record) is not False
        if current or time.monotonic() > deadline:
            return record
        time.sleep(0.05)


def _busy(work_dir: Path, holder: dict | None) -> WorkDirError:
    """The error of a run refused because another one holds `work_dir`."""
    who = _describe(holder) if holder else "a process that has not yet recorded itself"
    return WorkDirError(
        f"{work_dir} is in use by another run: {who}; wait for it to end (or stop it, and "
        "continue it with --resume), or pass another --work-dir"
    )


class WorkDirLock:
    """The lock of a work dir, held from `hold_work_dir` until `release` (or the block's end).

    `note` says whose lock was taken over (a killed run's), else it is None.
    """

    def __init__(self, work_dir: Path, fd: int | None, created: Path | None, note: str | None):
        self.work_dir, self.note = work_dir, note
        self._fd, self._created = fd, created

    def release(self) -> None:
        """Give the work dir back: remove the lock file, and the directories it made if empty."""
        if self._fd is None:
            return
        path = self.work_dir / LOCK_NAME
        _HELD.discard(str(path.resolve()))
        path.unlink(missing_ok=True)  # before the lock goes: a waiter then sees a new file
        os.close(self._fd)
        self._fd = None
        if self._created is None:
            return
        for directory in (self.work_dir, *self.work_dir.parents):
            try:
                directory.rmdir()  # only an empty one: a run that wrote nothing
            except OSError:
                break
            if directory == self._created:
                break

    def __enter__(self) -> WorkDirLock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _make_dirs(work_dir: Path) -> Path | None:
    """Create `work_dir` and its missing parents; returns the topmost one created, or None."""
    missing = [path for path in (work_dir, *work_dir.parents) if not path.exists()]
    work_dir.mkdir(parents=True, exist_ok=True)
    return missing[-1] if missing else None


def _open(path: Path) -> int:
    """Open (or create) the lock file `path` for reading and writing; WorkDirError if it cannot."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        raise WorkDirError(
            f"cannot open {path}: {error.strerror or error}; pass another --work-dir, or let "
            "this user write that file"
        ) from None


def _lock(work_dir: Path, path: Path) -> tuple[int, bool]:
    """Open and lock `path`: (its descriptor, whether the OS lock is held); refused if busy.

    The file is opened again when it was replaced between the open and the lock (a holder
    that released it meanwhile removes it), so that two runs never hold two files.
    """
    while True:
        fd = _open(path)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EACCES, errno.EAGAIN):
                raise _busy(work_dir, _holder_of(path)) from None
            if error.errno not in _NO_LOCKS:
                raise WorkDirError(
                    f"cannot lock {path}: {error.strerror or error}; check the file system"
                ) from None
            fd = _open(path)
            locked = False
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd, locked
        os.close(fd)


def hold_work_dir(work_dir: str | os.PathLike, rank: int | None = None) -> WorkDirLock:
    """Take the lock of `work_dir` (created if missing) for this run, or raise WorkDirError.

    Refused at once, naming the holder, while another run holds it. A lock left by a run
    that died is taken over and `WorkDirLock.note` says whose it was (also printed, and
    appended to the work dir's train.log). `rank` (default: ``RANK`` of torchrun, else 0):
    only rank 0 locks; the others get a lock that holds nothing.
    """
    work_dir = Path(work_dir)
    if rank is None:
        rank = int(os.environ["RANK"]) if os.environ.get("RANK", "").isdigit() else 0
    if rank != 0:
        return WorkDirLock(work_dir, None, None, None)
    check_writable(work_dir)
    path = work_dir / LOCK_NAME
    if str(path.resolve()) in _HELD:
        raise _busy(work_dir, _record_of_this_process())
    try:
        created = _make_dirs(work_dir)
    except OSError as error:
        raise WorkDirError(
            f"cannot create work dir {work_dir}: {error.strerror or error}; pass another --work-dir"
        ) from None
    fd, locked = _lock(work_dir, path)
    lock = WorkDirLock(work_dir, fd, created, None)
    _HELD.add(str(path.resolve()))
    try:
        previous = _read_record(fd)
        if previous is not None and previous.get("pid") != os.getpid():
            alive = _alive(previous)
            if alive or (alive is None and not locked):
                advice = "" if alive else f"; if that run is gone, delete {path}"
                raise WorkDirError(str(_busy(work_dir, previous)) + advice)
            lock.note = (
                f"took over the lock of {work_dir} from {_describe(previous)}, which no longer "
                "runs (killed, or its machine stopped)"
            )
        data = json.dumps(_record_of_this_process()).encode("utf-8")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        except OSError as error:
            raise cannot_write(path, error) from None
    except BaseException:
        _HELD.discard(str(path.resolve()))
        os.close(fd)  # the file stays: it is the other holder's, or a dead one's record
        lock._fd = None
        raise
    if lock.note:
        _log_note(work_dir, lock.note)
    return lock


def _log_note(work_dir: Path, note: str) -> None:
    """Print `note` and add it to the work dir's train.log, when there is one."""
    print(note, flush=True)
    log = work_dir / "train.log"
    if log.is_file():
        append_text(log, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {note}\n")
