"""Tests of resuming: the checkpoint's config against the run's, the checksum of every
checkpoint, and the checkpoint written before the evaluation due at its iteration."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers import AUGMENTING, read_metrics, tiny_config, write_dataset
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from segls import config
from segls.train import CheckpointError, checkpoint, train, validation
from segls.train import logger as logger_module
from segls.train.resume import check_resume_config


class Interrupted(Exception):
    pass


def six_iteration_config(root: Path, **schedule) -> config.Config:
    """A tiny augmenting, deterministic run of 6 iterations, evaluated and saved every 2."""
    return tiny_config(
        root,
        data=AUGMENTING,
        schedule={"max_iters": 6, "eval_interval": 2, "checkpoint_interval": 2, **schedule},
        runtime={"deterministic": True, "vis_samples": 1},
    )


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The config and work dir of an uninterrupted 6-iteration run."""
    base = tmp_path_factory.mktemp("resume")
    cfg = six_iteration_config(write_dataset(base / "data"))
    train(cfg, base / "straight")
    return cfg, base / "straight"


def copy_of(run: Path, tmp_path: Path) -> Path:
    work_dir = tmp_path / "run"
    shutil.copytree(run, work_dir)
    return work_dir


def files_of(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def assert_same_run(work_dir: Path, reference: Path) -> None:
    """Final and best checkpoints' weights and optimizer states, and metrics.jsonl, equal."""
    for name in ("latest.pth", "best.pth"):
        ours, theirs = checkpoint.load(work_dir / name), checkpoint.load(reference / name)
        assert (ours["iter"], ours["best_miou"]) == (theirs["iter"], theirs["best_miou"]), name
        for key, tensor in theirs["model"].items():
            assert torch.equal(ours["model"][key], tensor), (name, key)
        for index, state in theirs["optimizer"]["state"].items():
            for key, value in state.items():
                assert torch.equal(ours["optimizer"]["state"][index][key], value), (index, key)
    assert (work_dir / "metrics.jsonl").read_bytes() == (reference / "metrics.jsonl").read_bytes()


# ---- the checkpoint's config ---------------------------------------------------------------


def test_resume_refuses_a_checkpoint_written_with_other_settings_naming_them(straight, tmp_path):
    cfg, reference = straight
    work_dir = copy_of(reference, tmp_path)
    before = files_of(work_dir)
    other = config.to_dict(cfg)
    other["runtime"]["seed"] = 1
    other["optimizer"]["lr"] = 0.02
    other["schedule"]["max_iters"] = 8  # may change: not named
    with pytest.raises(CheckpointError) as error:
        train(config.from_dict(other), work_dir, resume=True)
    message = str(error.value)
    assert message.startswith(f"cannot resume from {work_dir / 'latest.pth'}: it was written with")
    assert "optimizer.lr 0.01 -> 0.02; runtime.seed 0 -> 1" in message
    assert "max_iters" not in message
    assert files_of(work_dir) == before  # nothing written, not even to train.log


def test_keys_that_may_change_on_resume_are_allowed_and_logged(straight, tmp_path):
    cfg, reference = straight
    work_dir = copy_of(reference, tmp_path)
    longer = config.to_dict(cfg)
    longer["schedule"].update(max_iters=8, log_interval=2)
    longer["data"]["num_workers"] = 1
    train(config.from_dict(longer), work_dir, resume=True)
    log = (work_dir / "train.log").read_text()
    assert "changed on resume: data.num_workers 0 -> 1" in log
    assert "changed on resume: schedule.log_interval 1 -> 2" in log
    assert "changed on resume: schedule.max_iters 6 -> 8" in log
    assert [row["iter"] for row in read_metrics(work_dir)] == [2, 4, 6, 8]


@pytest.mark.parametrize("max_iters", [6, 4])
def test_resuming_at_or_past_max_iters_says_there_is_nothing_to_train(
    straight, tmp_path, max_iters
):
    cfg, reference = straight
    work_dir = copy_of(reference, tmp_path)
    shorter = config.to_dict(cfg)
    shorter["schedule"]["max_iters"] = max_iters
    scores = train(config.from_dict(shorter), work_dir, resume=True)
    log = (work_dir / "train.log").read_text().split("resumed from")[-1]
    assert (
        f"nothing to train: the checkpoint is at iter 6 and schedule.max_iters={max_iters}; "
        "raise schedule.max_iters to train on" in log
    )
    assert "done:" not in log
    assert scores["mIoU"] == read_metrics(work_dir)[-1]["mIoU"]  # what the weights score
    assert (work_dir / "metrics.jsonl").read_bytes() == (reference / "metrics.jsonl").read_bytes()


# ---- checksums ------------------------------------------------------------------------------


def test_bit_rot_inside_a_checkpoint_is_caught_and_resume_falls_back(straight, tmp_path):
    _, reference = straight
    work_dir = copy_of(reference, tmp_path)
    latest = work_dir / "latest.pth"
    data = bytearray(latest.read_bytes())
    middle = len(data) // 2
    for start in (middle - 4096, middle, middle + 4096):  # 3 x 64 bytes inverted
        data[start : start + 64] = bytes(255 - byte for byte in data[start : start + 64])
    latest.write_bytes(bytes(data))
    assert torch.load(latest, weights_only=True)["iter"] == 6  # torch alone does not notice

    with pytest.raises(CheckpointError, match="latest.pth: its contents do not match the CRC-32"):
        checkpoint.load(latest)
    path, state, note = checkpoint.resume_state(work_dir, True)
    assert path == work_dir / "best.pth" and state["iter"] == checkpoint.load(path)["iter"]
    assert f"cannot resume from {latest}: cannot read checkpoint {latest}: its contents" in note


# ---- the checkpoint due at an evaluation ------------------------------------------------------


def crash_in(monkeypatch, name: str, call: int) -> None:
    """Make the `call`-th call of ``validation.<name>`` raise Interrupted."""
    calls, real = [], getattr(validation, name)

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise Interrupted("the evaluation failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(validation, name, crashing)


def test_the_checkpoint_due_at_an_evaluation_is_written_before_it(straight, tmp_path, monkeypatch):
    cfg, _ = straight
    work_dir = tmp_path / "run"
    crash_in(monkeypatch, "evaluate", 2)  # the evaluation at iteration 4
    with pytest.raises(Interrupted):
        train(cfg, work_dir)
    latest = checkpoint.load(work_dir / "latest.pth")
    assert latest["iter"] == 4 and latest["eval_pending"] is True  # no training lost
    assert "error: Interrupted: the evaluation failed" in (work_dir / "train.log").read_text()


@pytest.mark.parametrize("where", ["evaluate", "sample_panels"])
def test_a_crash_during_an_evaluation_then_resume_ends_as_the_uninterrupted_run(
    straight, tmp_path, monkeypatch, where
):
    cfg, reference = straight
    work_dir = tmp_path / "run"
    crash_in(monkeypatch, where, 2)  # before (evaluate) or after (panels) the scores' record
    with pytest.raises(Interrupted):
        train(cfg, work_dir)
    monkeypatch.undo()
    train(cfg, work_dir, resume=True)
    assert_same_run(work_dir, reference)


# ---- the number of processes ---------------------------------------------------------------


def with_batch(cfg: config.Config, batch_size: int) -> config.Config:
    tree = config.to_dict(cfg)
    tree["data"]["batch_size"] = batch_size
    return config.from_dict(tree)


def test_resume_on_another_number_of_processes_keeps_the_total_batch_or_is_refused(
    straight, monkeypatch
):
    cfg, reference = straight  # one process, data.batch_size 2
    path = reference / "latest.pth"
    state = checkpoint.load(path)
    assert state["world_size"] == 1

    # 2 x 1 -> 1 x 2: the same total batch, allowed and said, with what changes.
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets: the default world size
    lines = check_resume_config(state, path, with_batch(cfg, 1))
    assert lines == [
        "resumed on 2 processes instead of 1: the total batch stays 2 (data.batch_size 2 x 1 "
        "-> 1 x 2); from here on the data order differs from a run on 1 process, and "
        "BatchNorm statistics are computed per process on 1 images (unless runtime.sync_bn)"
    ]
    # 2 x 1 -> 2 x 2: the total batch would double; refused naming both totals.
    with pytest.raises(CheckpointError) as error:
        check_resume_config(state, path, cfg)
    assert str(error.value) == (
        f"cannot resume from {path}: it was trained with a total batch of 2 (data.batch_size 2 "
        "x 1 process), and this run's would be 4 (data.batch_size 2 x 2 processes); set "
        "data.batch_size=1 to keep it on 2 processes, or start a fresh run"
    )
    # And back: written by 2 processes of 1, resumed by one process of 2 (or refused with 1).
    two = {**state, "config": config.to_dict(with_batch(cfg, 1)), "world_size": 2}
    assert check_resume_config(two, path, cfg, world_size=1)[0].startswith(
        "resumed on 1 process instead of 2: the total batch stays 2"
    )
    with pytest.raises(CheckpointError, match="total batch of 2 .* would be 1 "):
        check_resume_config(two, path, with_batch(cfg, 1), world_size=1)
    # The same number of processes with another batch is refused as before.
    with pytest.raises(CheckpointError, match="data.batch_size 2 -> 1"):
        check_resume_config(state, path, with_batch(cfg, 1), world_size=1)


# ---- an evaluation's records as one unit ------------------------------------------------------


class Killed(BaseException):
    pass


def kill_at_the_row(monkeypatch, tmp_path: Path, after_row: bool) -> Path:
    """At the evaluation at iteration 4, copy the work dir as a SIGKILL would leave it (what is
    on disk: nothing is flushed or closed later) just before or after its metrics.jsonl row,
    then stop the run; returns the copy."""
    real, killed = logger_module.append_text, tmp_path / "killed"

    def appending(path, text):
        if Path(path).name != "metrics.jsonl" or '"iter": 4,' not in text:
            return real(path, text)
        if after_row:
            real(path, text)
        shutil.copytree(Path(path).parent, killed)
        raise Killed

    monkeypatch.setattr(logger_module, "append_text", appending)
    return killed


@pytest.mark.parametrize("after_row", [False, True], ids=["before-the-row", "after-the-row"])
def test_a_kill_at_an_evaluation_leaves_each_record_once_after_resume(
    straight, tmp_path, monkeypatch, after_row
):
    cfg, reference = straight
    killed = kill_at_the_row(monkeypatch, tmp_path, after_row)
    with pytest.raises(Killed):
        train(cfg, tmp_path / "run")
    monkeypatch.undo()
    train(cfg, killed, resume=True)
    assert_same_run(killed, reference)
    events = EventAccumulator(str(killed), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    for tag in ("val/mIoU", "val/loss"):
        assert [e.step for e in events.Scalars(tag)] == [2, 4, 6], tag
    for tag in ("val/reliability", "val/sample_0"):
        assert [e.step for e in events.Images(tag)] == [2, 4, 6], tag
    expected = EventAccumulator(str(reference), size_guidance={"scalars": 0})
    expected.Reload()
    for tag in ("train/loss", "train/lr"):
        ours = [(e.step, e.value) for e in events.Scalars(tag)]
        assert ours == [(e.step, e.value) for e in expected.Scalars(tag)], tag
