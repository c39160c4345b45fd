"""Tests of the work dir's rules: nothing written before the run is checked, and another run's
records never lost; a work dir that is a file, read-only or full gets one line of error."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import FullDisk, read_metrics, tiny_config, write_dataset
from PIL import Image
from torch.utils.data import DistributedSampler

from segls import config, io
from segls.cli import train as train_cli
from segls.train import checkpoint, logger, train


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A dataset, the config file of a 2-iteration run, and that run's work dir."""
    base = tmp_path_factory.mktemp("workdir")
    cfg = tiny_config(
        write_dataset(base / "data"), schedule={"max_iters": 2}, runtime={"vis_samples": 0}
    )
    config_path = base / "tiny.yaml"
    config.dump(cfg, config_path)
    train(cfg, base / "run")
    return cfg, config_path, base / "run"


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory`, by relative path, with its bytes."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def broken_data(kind: str, base: Path) -> Path:
    """A dataset root that fails as `kind` says."""
    if kind == "missing root":
        return base / "nonexistent"
    root = write_dataset(base / kind.replace(" ", "_"))
    if kind == "bad train mask":
        mask = np.array(Image.open(root / "masks" / "train" / "s1.png"))
        mask[5, 5] = 7
        Image.fromarray(mask).save(root / "masks" / "train" / "s1.png")
    elif kind == "empty train folder":
        for folder in ("images", "masks"):
            shutil.rmtree(root / folder / "train")
            (root / folder / "train").mkdir()
    return root


@pytest.mark.parametrize("kind", ["missing root", "bad train mask", "empty train folder"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_failed_fresh_run_leaves_another_runs_records_untouched(
    finished, tmp_path, capsys, kind, overwrite
):
    _, config_path, run = finished
    work_dir = tmp_path / "old_run"
    shutil.copytree(run, work_dir)
    before = snapshot(work_dir)
    root = broken_data(kind, tmp_path)
    argv = [str(config_path), "--work-dir", str(work_dir), f"data.root={root}"]
    assert train_cli.run(argv + ["--overwrite"] * overwrite) == 1
    assert "error: " in capsys.readouterr().err
    assert snapshot(work_dir) == before  # not a byte changed, no file added


def test_a_fresh_run_into_another_runs_work_dir_is_refused_unless_overwrite(
    finished, tmp_path, capsys
):
    _, config_path, run = finished
    work_dir = tmp_path / "old_run"
    shutil.copytree(run, work_dir)
    before = snapshot(work_dir)
    argv = [str(config_path), "--work-dir", str(work_dir), "schedule.max_iters=1"]
    assert train_cli.run(argv) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {work_dir} holds another run's records (best.pth, ")
    assert "--resume" in error and "--overwrite" in error and error.count("\n") == 1
    assert snapshot(work_dir) == before

    assert train_cli.run(argv + ["--overwrite"]) == 0
    assert checkpoint.load(work_dir / "latest.pth")["iter"] == 1
    assert [row["iter"] for row in read_metrics(work_dir)] == [1]
    assert len(list(work_dir.glob("events.out.tfevents.*"))) == 1  # the old one deleted
    log = (work_dir / "train.log").read_text()
    assert "deleted the previous run's records" in log
    assert "iter 2/2" not in log  # the old run's log went with its records


def test_a_failed_resume_creates_no_work_dir_and_no_empty_records(finished, tmp_path, capsys):
    _, config_path, run = finished
    work_dir = tmp_path / "new_run"
    root = broken_data("empty train folder", tmp_path)
    argv = [str(config_path), "--work-dir", str(work_dir), f"data.root={root}"]
    assert train_cli.run([*argv, "--resume", str(run / "latest.pth")]) == 1
    assert "error: " in capsys.readouterr().err
    assert not work_dir.exists()


def test_a_work_dir_that_is_a_file_is_one_line_of_error(finished, tmp_path, capsys):
    _, config_path, _ = finished
    path = tmp_path / "taken"
    path.write_text("a file")
    assert train_cli.run([str(config_path), "--work-dir", str(path)]) == 1
    error = capsys.readouterr().err
    assert error == (
        f"error: work dir {path}: {path} is a file, not a directory; pass another --work-dir "
        "or move the file away\n"
    )
    assert train_cli.run([str(config_path), "--work-dir", str(path / "below")]) == 1
    assert f"{path} is a file, not a directory" in capsys.readouterr().err


def make_read_only(directory: Path, monkeypatch) -> None:
    """Make `directory` read-only for this process: chmod, or for root the immutable flag.

    Where neither is possible (root without chattr), this process is told so by os.access.
    """
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return
    done = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, check=False)
    if done.returncode != 0:
        real_access = os.access

        def access(path, mode) -> bool:
            return Path(path) != directory and real_access(path, mode)

        monkeypatch.setattr(os, "access", access)


def undo_read_only(directory: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(directory)], capture_output=True, check=False)
    directory.chmod(0o755)


def test_a_read_only_work_dir_is_one_line_of_error(finished, tmp_path, monkeypatch, capsys):
    _, config_path, _ = finished
    locked = tmp_path / "locked"
    locked.mkdir()
    make_read_only(locked, monkeypatch)
    try:
        for work_dir in (locked, locked / "run"):
            assert train_cli.run([str(config_path), "--work-dir", str(work_dir)]) == 1
            error = capsys.readouterr().err
            assert error == (
                f"error: work dir {work_dir}: {locked} is read-only for this process; pass a "
                "writable --work-dir or make it writable\n"
            )
    finally:
        undo_read_only(locked)
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("log_writable", [True, False])
def test_a_full_disk_during_a_checkpoint_write_is_one_line_and_keeps_the_last_one(
    finished, tmp_path, monkeypatch, capsys, log_writable
):
    _, config_path, _ = finished
    work_dir = tmp_path / "run"
    saves = []
    real_open, real_append = io._open_new, logger.append_text

    def open_new(path: Path):
        if path.name.startswith(".latest.pth."):
            saves.append(path)
            if len(saves) == 2:  # the disk fills during the second save of latest.pth
                return FullDisk(real_open(path), room=100_000)
        return real_open(path)

    def append_text(path, text) -> None:
        if len(saves) >= 2 and not log_writable:  # full for train.log too
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_append(path, text)

    monkeypatch.setattr(io, "_open_new", open_new)
    monkeypatch.setattr(logger, "append_text", append_text)
    argv = [str(config_path), "--work-dir", str(work_dir), "schedule.max_iters=4"]
    assert train_cli.run(argv) == 1
    latest = work_dir / "latest.pth"
    assert capsys.readouterr().err == (
        f"error: cannot write {latest}: No space left on device; free some space (the files "
        "written before are intact), then continue with --resume\n"
    )
    assert checkpoint.load(latest)["iter"] == 2  # whole: its checksum verified
    assert not list(work_dir.glob(".*.tmp*"))
    in_log = f"error: cannot write {latest}: No space left on device"
    assert (in_log in (work_dir / "train.log").read_text()) == log_writable


def test_a_fresh_run_that_stops_before_its_first_checkpoint_blocks_no_rerun(
    finished, tmp_path, capsys
):
    """A bad training mask after the first batch stops the run before any checkpoint: the
    same command again meets the same error (not "holds another run's records"), and
    --resume, which finds no checkpoint, sends the user to a plain start: never a circle."""
    _, config_path, _ = finished
    root = write_dataset(tmp_path / "data", num_train=8)
    sampler = DistributedSampler(range(8), num_replicas=1, rank=0, shuffle=True, seed=0)
    sampler.set_epoch(0)
    bad = root / "masks" / "train" / f"s{list(sampler)[-1]}.png"  # in the last batch
    mask = np.array(Image.open(bad))
    mask[5, 5] = 7
    Image.fromarray(mask).save(bad)
    work_dir = tmp_path / "run"
    argv = [str(config_path), "--work-dir", str(work_dir), f"data.root={root}"]
    argv += ["schedule.max_iters=8", "schedule.checkpoint_interval=8", "schedule.eval_interval=8"]
    for _ in range(2):
        assert train_cli.run(argv) == 1
        assert capsys.readouterr().err.startswith(f"error: {bad}: mask values [7]")
    assert not list(work_dir.glob("events.out.tfevents.*")) and not list(work_dir.glob("*.pth"))
    log = (work_dir / "train.log").read_text()
    assert log.count("no checkpoint was written, so this run cannot be resumed") == 2
    assert train_cli.run([*argv, "--resume"]) == 1
    assert "start without --resume" in capsys.readouterr().err

    # A run killed before its first checkpoint leaves its records: the advice names --overwrite.
    (work_dir / "events.out.tfevents.1.host.1.0").write_bytes(b"events")
    assert train_cli.run(argv) == 1
    err = capsys.readouterr().err
    assert "stopped before its first checkpoint" in err and "--overwrite" in err, err
    assert "--resume" not in err
