"""Tests of the work dir's lock: one run per work dir, a second start or a --resume while it
lives refused at once naming the holder, a killed run's lock taken over (segls.train.lock)."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO_ROOT, read_metrics, tiny_config, write_dataset

from segls import config
from segls.cli import train as train_cli
from segls.train import WorkDirError, checkpoint, lock
from segls.train.lock import LOCK_NAME, hold_work_dir

WAIT_S = 180  # a run's start on a busy 2-core machine
# tools/train.py, once everything it uses is imported ("ready") and a line comes on stdin.
STARTER = (
    "import sys; import segls.train.loop; from segls.cli.train import run\n"
    "print('ready', flush=True); sys.stdin.readline(); sys.exit(run(sys.argv[1:]))\n"
)
HOLD = (
    "import sys, time; from segls.train.lock import hold_work_dir\n"
    "held = hold_work_dir(sys.argv[1]); print('held', flush=True); time.sleep(600)\n"
)


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    """The config file of a tiny 6-iteration run (evaluations at 2, 4 and 6)."""
    base = tmp_path_factory.mktemp("lock")
    cfg = tiny_config(
        write_dataset(base / "data"), schedule={"max_iters": 6}, runtime={"vis_samples": 0}
    )
    path = base / "tiny.yaml"
    config.dump(cfg, path)
    return path


def child_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def train_process(
    config_path: Path, work_dir: Path, *extra: str, starter: str | None = None
) -> subprocess.Popen:
    """tools/train.py CONFIG --work-dir WORK_DIR EXTRA..., started in the background.

    With `starter` (STARTER), the same command line run by that script instead.
    """
    script = ["-c", starter] if starter else [str(REPO_ROOT / "tools" / "train.py")]
    return subprocess.Popen(
        [sys.executable, *script, str(config_path), "--work-dir", str(work_dir), *extra],
        env=child_env(), stdin=subprocess.PIPE if starter else None, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def holder(work_dir: Path) -> subprocess.Popen:
    """A process that holds `work_dir`'s lock until killed (it has printed "held")."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(work_dir)], env=child_env(), stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert process.stdout.readline().strip() == "held"
    return process


def kill_9(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(WAIT_S)


def test_a_held_work_dir_is_refused_naming_the_holder_and_a_killed_ones_is_taken_over(tmp_path):
    work_dir = tmp_path / "run"
    process = holder(work_dir)
    try:
        with pytest.raises(WorkDirError) as refused:
            hold_work_dir(work_dir)
    finally:
        kill_9(process)
    message = str(refused.value)
    assert f"pid {process.pid} on host {socket.gethostname()}, started 20" in message
    assert message.startswith(f"{work_dir} is in use by another run: ")
    assert "\n" not in message
    record = json.loads((work_dir / LOCK_NAME).read_text())  # the killed run's, left behind
    assert record["pid"] == process.pid
    (work_dir / "train.log").write_text("2026-01-01 00:00:00 the killed run's line\n")
    with hold_work_dir(work_dir) as held:
        assert f"took over the lock of {work_dir} from pid {process.pid}" in held.note
        assert json.loads((work_dir / LOCK_NAME).read_text())["pid"] == os.getpid()
        with pytest.raises(WorkDirError, match=f"pid {os.getpid()}"):
            hold_work_dir(work_dir)  # the same process, too
    assert held.note in (work_dir / "train.log").read_text()
    assert not (work_dir / LOCK_NAME).exists()  # released: the file goes


def test_a_lock_that_made_the_work_dir_removes_it_when_nothing_was_written(tmp_path):
    with hold_work_dir(tmp_path / "a" / "run"):
        assert (tmp_path / "a" / "run" / LOCK_NAME).is_file()
    assert list(tmp_path.iterdir()) == []
    assert hold_work_dir(tmp_path / "other", rank=1).note is None  # rank 1 holds nothing
    assert not (tmp_path / "other").exists()


def test_without_os_locks_the_record_decides(tmp_path, monkeypatch):
    """A file system without locks (NFS mounted nolock): pid, start time and host decide."""

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(lock.fcntl, "lockf", no_locks)
    work_dir = tmp_path / "run"
    work_dir.mkdir()
    path = work_dir / LOCK_NAME
    alive = {**lock._record_of_this_process(), "pid": os.getppid()}
    alive["start_ticks"] = lock._start_ticks(os.getppid())
    records = {
        "alive here": (alive, "is in use by another run"),
        "pid reused": ({**alive, "start_ticks": -1}, None),
        "dead": ({**alive, "pid": 2**22 + 1}, None),
        "other host": ({**alive, "host": "elsewhere"}, f"if that run is gone, delete {path}"),
    }
    for case, (record, refused) in records.items():
        path.write_text(json.dumps(record))
        if refused:
            with pytest.raises(WorkDirError, match=refused):
                hold_work_dir(work_dir)
            assert json.loads(path.read_text()) == record, case  # left as it was
        else:
            with hold_work_dir(work_dir) as held:
                assert "took over the lock" in held.note, case


def test_two_runs_started_at_once_one_is_refused_the_others_records_intact(config_path, tmp_path):
    # Both import everything first and start on one line from the test, so neither can finish
    # before the other asks for the lock, however slowly a loaded machine imports torch.
    work_dir = tmp_path / "run"
    runs = [train_process(config_path, work_dir, starter=STARTER) for _ in range(2)]
    for run in runs:
        assert run.stdout.readline().strip() == "ready", run.communicate()
    for run in runs:
        run.stdin.write("go\n")
        run.stdin.flush()
    outputs = [run.communicate(timeout=WAIT_S) for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes == [0, 1], outputs
    refused = next(index for index, run in enumerate(runs) if run.returncode == 1)
    other = runs[1 - refused]
    err = outputs[refused][1]
    assert err.startswith(f"error: {work_dir} is in use by another run: pid {other.pid} on host ")
    assert len(err.splitlines()) == 1, err
    assert [row["iter"] for row in read_metrics(work_dir)] == [2, 4, 6]
    assert len(list(work_dir.glob("events.out.tfevents.*"))) == 1
    assert checkpoint.load(work_dir / "latest.pth")["iter"] == 6
    log = (work_dir / "train.log").read_text()
    assert log.count("training Unet") == 1 and "error" not in log
    assert not (work_dir / LOCK_NAME).exists()


def test_resume_while_the_run_lives_is_refused_and_after_kill_9_it_resumes(
    config_path, tmp_path, capsys
):
    work_dir = tmp_path / "run"
    long_run = ["schedule.max_iters=100000", "schedule.eval_interval=100000"]
    run = train_process(config_path, work_dir, *long_run)
    try:
        deadline = time.monotonic() + WAIT_S
        while not (work_dir / "latest.pth").exists():
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.2)
        argv = [str(config_path), "--work-dir", str(work_dir), "--resume"]
        started = time.monotonic()
        assert train_cli.run([*argv, *long_run]) == 1
        assert time.monotonic() - started < 5  # at once: before anything is built
        err = capsys.readouterr().err
        assert err.startswith(f"error: {work_dir} is in use by another run: pid {run.pid} on ")
        assert run.poll() is None  # the run goes on
    finally:
        kill_9(run)
    assert train_cli.run([*argv, "schedule.max_iters=2"]) == 0  # nothing to train: evaluates
    out = capsys.readouterr().out
    assert f"took over the lock of {work_dir} from pid {run.pid}" in out
    log = (work_dir / "train.log").read_text()
    assert f"from pid {run.pid}" in log and "resumed from" in log
    assert not (work_dir / LOCK_NAME).exists()


def test_compare_smoothing_into_a_held_run_dir_is_refused(config_path, tmp_path, capsys):
    from segls.cli import compare_smoothing
    from segls.train.smoothing import run_dir_name

    out = tmp_path / "smoothing"
    process = holder(out / run_dir_name(0.1, 0))
    try:
        argv = [str(config_path), "--eps", "0", "0.1", "--out", str(out)]
        assert compare_smoothing.run(argv) == 1
    finally:
        kill_9(process)
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out / run_dir_name(0.1, 0)} is in use by another run: pid ")
    assert not (out / run_dir_name(0.0, 0)).exists()  # nothing trained, nothing left
