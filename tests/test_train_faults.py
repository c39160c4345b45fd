"""Tests that training survives faults: SIGKILL, SIGTERM/Ctrl-C, bad checkpoints, NaN losses.

The kill tests run the training command line (`segls.cli.train`) in processes forked from
the forkserver of tests/helpers.py and kill them for real. Probes installed in those processes (never
in segls itself) append a line to an events file as each step, evaluation, checkpoint write
and batch fetch begins and ends, and pause a little inside each, so that a kill can be aimed
at a phase and the test can tell afterwards which phase it hit.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import (
    AUGMENTING,
    finish,
    free_port,
    output_of,
    start,
    tiny_config,
    torchrun_env,
    write_dataset,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from segls import config
from segls.cli import train as train_command
from segls.data import InfiniteLoader, SegDataset
from segls.losses import LabelSmoothSoftmaxCE
from segls.train import checkpoint, faults, loop, train, validation

MAX_ITERS = 14
KILL_PAUSES = {"step": 0.1, "eval": 0.2, "save": 0.3}


# ---- what runs in the child processes -------------------------------------------------------


def _probe(real, name: str, event, pause: float):
    """`real`, announcing "<name>-begin" and "<name>-end" and pausing `pause` s inside."""

    def probed(*args, **kwargs):
        event(f"{name}-begin")
        time.sleep(pause)
        result = real(*args, **kwargs)
        event(f"{name}-end")
        return result

    return probed


def install_probes(events: str, pauses: dict) -> None:
    """Announce steps, evaluations, checkpoint writes and batch fetches in the `events` file.

    A checkpoint write pauses with half of the file written, so a kill then leaves a
    truncated temporary file behind. `pauses["load"]` slows each image read (in the loader
    workers too), so the main process waits for batches.
    """
    handle = open(events, "a", buffering=1)  # noqa: SIM115 - open until the process ends

    def event(name: str) -> None:
        handle.write(name + "\n")
        handle.flush()

    loop.train_one_iter = _probe(loop.train_one_iter, "step", event, pauses.get("step", 0))
    validation.evaluate = _probe(validation.evaluate, "eval", event, pauses.get("eval", 0))
    InfiniteLoader.__next__ = _probe(InfiniteLoader.__next__, "fetch", event, 0)
    if pauses.get("load"):
        SegDataset.__getitem__ = _probe(
            SegDataset.__getitem__, "load", lambda name: None, pauses["load"]
        )
    real_save = torch.save

    def half_then_pause(obj, file, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        file.write(data[: len(data) // 2])
        file.flush()
        event("save-begin")
        time.sleep(pauses.get("save", 0))
        file.write(data[len(data) // 2 :])
        event("save-end")

    torch.save = half_then_pause


def train_cli(argv: list[str], events: str | None = None, pauses: dict | None = None) -> None:
    """The training command line in this process (its own process group), probes if `events`."""
    os.setpgrp()  # so a Ctrl-C to "the terminal" reaches this process and its workers only
    multiprocessing.set_start_method("fork", force=True)  # loader workers as in `python ...`
    cli = train_command
    if events is not None:
        install_probes(events, pauses or {})
    sys.exit(cli.run(argv))


# ---- helpers on the test side ----------------------------------------------------------------


def events_of(path: Path) -> list[str]:
    """The complete lines of an events file."""
    return path.read_text().split("\n")[:-1] if path.exists() else []


def wait_for(path: Path, line: str, count: int, process, after: Path | None = None) -> None:
    """Block until the events file holds `count` copies of `line` (after `after` exists)."""
    if after is not None:
        wait_for(path, "save-end", 1, process)
        while not after.exists():
            wait_for(path, "save-end", events_of(path).count("save-end") + 1, process)
        count += events_of(path).count(line)
    deadline = time.monotonic() + 120
    while events_of(path).count(line) < count:
        if not process.is_alive():
            pytest.fail(f"the run ended before {count} x {line}:\n{output_of(process)[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {count} x {line} within 120 s")
        time.sleep(0.003)


def phase_at_kill(path: Path) -> str:
    """The phase the process was in when killed: the last event if it began something."""
    last = events_of(path)[-1]
    return last.removesuffix("-begin") if last.endswith("-begin") else "between"


def assert_same_run(work_dir: Path, reference: Path) -> None:
    """The final checkpoints and evaluation records of two runs are bit for bit equal."""
    for name in ("latest.pth", "best.pth"):
        ours, theirs = checkpoint.load(work_dir / name), checkpoint.load(reference / name)
        assert ours["iter"] == theirs["iter"], name
        for key, tensor in theirs["model"].items():
            assert torch.equal(ours["model"][key], tensor), (name, key)
        moments = theirs["optimizer"]["state"]
        for index, state in moments.items():
            for key, value in state.items():
                assert torch.equal(ours["optimizer"]["state"][index][key], value), (index, key)
    metrics = [(d / "metrics.jsonl").read_text() for d in (work_dir, reference)]
    assert metrics[0] == metrics[1]


def deterministic_config(base: Path, **schedule) -> config.Config:
    """A tiny augmenting, deterministic config on a dataset written under `base`."""
    return tiny_config(
        write_dataset(base / "data"),
        data=AUGMENTING,
        schedule=schedule,
        runtime={"deterministic": True, "vis_samples": 0},
    )


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """The uninterrupted run that the interrupted ones must reproduce exactly."""
    base = tmp_path_factory.mktemp("faults")
    cfg = deterministic_config(base, max_iters=MAX_ITERS, eval_interval=3, checkpoint_interval=2)
    config_path = base / "tiny.yaml"
    config.dump(cfg, config_path)
    work_dir = base / "straight"
    finish(start(train_cli, ([str(config_path), "--work-dir", str(work_dir)],), base, "straight"))
    return config_path, work_dir


# ---- SIGKILL ----------------------------------------------------------------------------------


def test_sigkill_at_random_moments_then_resume_reproduces_the_uninterrupted_run(
    straight_run, tmp_path
):
    config_path, reference = straight_run
    rng = random.Random(20240607)
    phases = ["save", "eval", "step", "save", "eval"]
    rng.shuffle(phases)
    # The first kill waits for a checkpoint to exist, so that every run can --resume.
    plan = [(phase, rng.randint(1, 2), rng.uniform(0.0, 0.02)) for phase in ["step", *phases]]
    work_dir = tmp_path / "run"
    argv = [str(config_path), "--work-dir", str(work_dir)]
    hit, resumed_at = [], []
    for index, (phase, count, delay) in enumerate(plan):
        events = tmp_path / f"events{index}.txt"
        args = (argv + ["--resume"] * (index > 0), str(events), KILL_PAUSES)
        process = start(train_cli, args, tmp_path, f"killed{index}")
        after = work_dir / "latest.pth" if index == 0 else None
        wait_for(events, f"{phase}-begin", count, process, after)
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
        finish(process, expect_exit=-signal.SIGKILL)
        hit.append(phase_at_kill(events))
        for path in work_dir.glob("*.pth"):  # every checkpoint on disk loads, whole
            checkpoint.check_training_state(checkpoint.load(path), path)
        if hit[-1] == "save":  # killed mid-write: the half file is a temporary, not a .pth
            assert list(work_dir.glob(".*.pth.*.tmp")), "the kill should leave a half file"
        resumed_at.append(checkpoint.load(work_dir / "latest.pth")["iter"])

    assert len(hit) >= 5 and {"step", "eval", "save"} <= set(hit), hit
    assert resumed_at == sorted(resumed_at) and resumed_at[-1] > resumed_at[0], resumed_at
    finish(start(train_cli, (argv + ["--resume"],), tmp_path, "final"))
    assert_same_run(work_dir, reference)
    assert not list(work_dir.glob(".*.tmp"))  # the half files were cleaned up on resume
    log = (work_dir / "train.log").read_text()
    assert log.count("resumed from") == len(plan)
    assert "left by a save that was interrupted" in log


# ---- SIGTERM and Ctrl-C -----------------------------------------------------------------------


def signal_run(argv, tmp_path, name: str, signum: int, at: tuple[str, int], group: bool):
    """Start the training command, send `signum` when the events reach `at`; 128 + signum."""
    events = tmp_path / f"{name}.events"
    pauses = {"step": 0.03, "load": 0.05 if group else 0}
    process = start(train_cli, (argv, str(events), pauses), tmp_path, name)
    wait_for(events, f"{at[0]}-begin", at[1], process)
    time.sleep(0.02)
    os.killpg(process.pid, signum) if group else os.kill(process.pid, signum)
    finish(process, expect_exit=128 + signum)
    return output_of(process)


def test_sigterm_writes_a_final_checkpoint_then_exits_and_resume_is_exact(straight_run, tmp_path):
    config_path, reference = straight_run
    work_dir = tmp_path / "run"
    argv = [str(config_path), "--work-dir", str(work_dir)]
    # SIGTERM as torchrun or a job scheduler sends it, in iteration 5 (between checkpoints).
    output = signal_run(argv, tmp_path, "term", signal.SIGTERM, ("step", 5), group=False)
    message = f"stopped by SIGTERM after iter 5: saved {work_dir / 'latest.pth'}"
    assert message in output and message in (work_dir / "train.log").read_text()
    assert checkpoint.load(work_dir / "latest.pth")["iter"] == 5
    finish(start(train_cli, (argv + ["--resume"],), tmp_path, "resumed"))
    assert_same_run(work_dir, reference)


def test_sigterm_to_one_rank_stops_every_rank_after_the_same_iteration(straight_run, tmp_path):
    config_path, _ = straight_run
    work_dir = tmp_path / "run"
    argv = [str(config_path), "--work-dir", str(work_dir)]
    port = free_port()
    ranks = [
        start(train_cli, (argv, str(tmp_path / f"rank{rank}.events"), {"step": 0.03}), tmp_path,
              f"rank{rank}", torchrun_env(rank, 2, port))
        for rank in range(2)
    ]  # fmt: skip
    wait_for(tmp_path / "rank1.events", "step-begin", 3, ranks[1])
    os.kill(ranks[1].pid, signal.SIGTERM)  # rank 0 is not signalled
    for process in ranks:
        finish(process, expect_exit=128 + signal.SIGTERM)
    saved = f"stopped by SIGTERM after iter 3: saved {work_dir / 'latest.pth'}"
    assert f"[rank 0] {saved}" in output_of(ranks[0])
    assert f"[rank 1] {saved}" in output_of(ranks[1])
    assert checkpoint.load(work_dir / "latest.pth")["iter"] == 3  # written by rank 0


def test_ctrl_c_with_loader_workers_stops_cleanly_even_right_after_a_resume(straight_run, tmp_path):
    config_path, _ = straight_run
    work_dir = tmp_path / "run"
    argv = [str(config_path), "--work-dir", str(work_dir), "data.num_workers=1"]
    # Ctrl-C reaches the whole process group, loader workers too, here while the main
    # process waits for a batch (slow image reads) in iteration 5.
    signal_run(argv, tmp_path, "first", signal.SIGINT, ("fetch", 5), group=True)
    assert checkpoint.load(work_dir / "latest.pth")["iter"] == 5
    # Resuming mid-epoch (2 batches per epoch) starts the workers before training starts;
    # a Ctrl-C must not kill them under the main process either.
    output = signal_run(argv + ["--resume"], tmp_path, "second", signal.SIGINT, ("fetch", 2), True)
    assert f"stopped by SIGINT after iter 7: saved {work_dir / 'latest.pth'}" in output
    assert checkpoint.load(work_dir / "latest.pth")["iter"] == 7
    finish(start(train_cli, (argv + ["--resume"],), tmp_path, "resumed"))
    assert checkpoint.load(work_dir / "latest.pth")["iter"] == MAX_ITERS


def test_stop_signals_ask_once_then_interrupt_and_give_back_the_handlers():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with faults.StopSignals() as stop:
        assert stop.requested() == 0
        os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C only asks...
        time.sleep(0.01)
        assert stop.requested() == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # ...the second one interrupts at once
            time.sleep(0.01)
    with faults.StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert stop.requested() == signal.SIGTERM
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


# ---- damaged checkpoints ----------------------------------------------------------------------


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def six_iters(tmp_path_factory):
    """A dataset, a 6-iteration deterministic config, and its uninterrupted run."""
    base = tmp_path_factory.mktemp("fallback")
    cfg = deterministic_config(base, max_iters=6, eval_interval=2, checkpoint_interval=2)
    train(cfg, base / "straight")
    return cfg, base / "straight"


def crash_at_step(monkeypatch, count: int) -> None:
    """Make the `count`-th training step raise Interrupted."""
    calls, real_step = [], loop.train_one_iter

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == count:
            raise Interrupted
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_one_iter", step)


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_resume_falls_back_to_the_newest_intact_checkpoint_and_says_so(
    six_iters, tmp_path, monkeypatch, damage
):
    cfg, reference = six_iters
    work_dir = tmp_path / "run"
    crash_at_step(monkeypatch, 5)
    with pytest.raises(Interrupted):
        train(cfg, work_dir)
    monkeypatch.undo()
    latest = work_dir / "latest.pth"
    best_iter = checkpoint.load(work_dir / "best.pth")["iter"]
    if damage == "truncated":
        latest.write_bytes(latest.read_bytes()[:1000])
    else:
        latest.unlink()

    train(cfg, work_dir, resume=True)
    log = (work_dir / "train.log").read_text()
    assert f"cannot resume from {latest}" in log
    assert f"resuming from {work_dir / 'best.pth'} (iter {best_iter}) instead" in log
    assert f"resumed from {work_dir / 'best.pth'} at iter {best_iter}" in log
    assert_same_run(work_dir, reference)


def test_an_explicit_damaged_checkpoint_is_named_and_not_replaced(six_iters, tmp_path):
    cfg, reference = six_iters
    damaged = tmp_path / "given.pth"
    damaged.write_bytes((reference / "latest.pth").read_bytes()[:5000])
    with pytest.raises(checkpoint.CheckpointError, match="given.pth.*truncated, corrupt"):
        train(cfg, tmp_path / "run", resume=damaged)


def test_resume_with_nothing_intact_says_what_it_found(tmp_path):
    (tmp_path / "latest.pth").write_bytes(b"PK\x03\x04 not a whole zip")
    (tmp_path / "best.pth").write_bytes(b"")
    with pytest.raises(checkpoint.CheckpointError, match="latest.pth.*no other intact"):
        checkpoint.resume_state(tmp_path, True)


# ---- non-finite losses ------------------------------------------------------------------------


class NaNLoss(nn.Module):
    """The wrapped criterion times NaN: a non-finite loss and non-finite gradients."""

    def __init__(self, criterion: nn.Module) -> None:
        super().__init__()
        self.criterion = criterion

    def forward(self, logits, labels):
        return self.criterion(logits, labels) * float("nan")


def nan_steps(monkeypatch, bad, log: list) -> None:
    """Give steps in `bad` (1-based) a NaN loss; log (skipped, state unchanged, loss, state)."""
    real_step = loop.train_one_iter

    def step(model, criterion, *args, **kwargs):
        number = len(log) + 1
        net = checkpoint.unwrap_model(model)
        before = {key: value.clone() for key, value in net.state_dict().items()}
        result = real_step(model, NaNLoss(criterion) if bad(number) else criterion, *args, **kwargs)
        after = {key: value.clone() for key, value in net.state_dict().items()}
        unchanged = all(torch.equal(before[key], after[key]) for key in before)
        log.append((result.skipped, unchanged, float(result.loss), after))
        return result

    monkeypatch.setattr(loop, "train_one_iter", step)


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_nonfinite_steps_are_skipped_counted_and_leave_the_model_as_it_was(
    tmp_path, monkeypatch, amp
):
    cfg = tiny_config(
        write_dataset(tmp_path / "data"),
        schedule={"max_iters": 6},
        optimizer={"max_nonfinite_steps": 3},
        runtime={"amp": amp, "vis_samples": 0},
    )
    log = []
    nan_steps(monkeypatch, lambda number: number in (3, 4), log)
    train(cfg, tmp_path / "run")
    # Skipped steps change nothing, BatchNorm statistics included; the others train.
    assert [(skipped, unchanged) for skipped, unchanged, *_ in log] == [
        (False, False), (False, False), (True, True), (True, True), (False, False), (False, False)
    ]  # fmt: skip
    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.value for e in events.Scalars("train/skipped_steps")] == [0, 0, 1, 1, 0, 0]
    text = (tmp_path / "run" / "train.log").read_text()
    assert "iter 3: non-finite loss or gradients, step skipped (1 in a row, 1 in all" in text
    assert "iter 4: non-finite loss or gradients, step skipped (2 in a row, 2 in all" in text
    assert checkpoint.load(tmp_path / "run" / "latest.pth")["iter"] == 6


@pytest.mark.parametrize("torch_has_get_total_norm", [True, False])
def test_nonfinite_flag_looks_at_the_loss_and_every_gradient(monkeypatch, torch_has_get_total_norm):
    if not torch_has_get_total_norm:  # torch < 2.6
        monkeypatch.delattr(torch.nn.utils, "get_total_norm", raising=False)
    weights = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))]
    optimizer = torch.optim.SGD(weights, lr=0.1)
    weights[0].grad, weights[1].grad = torch.ones(3), torch.ones(2)
    assert not faults.nonfinite_flag(torch.tensor(1.0), optimizer)
    assert faults.nonfinite_flag(torch.tensor(float("inf")), optimizer)
    weights[1].grad[1] = float("nan")
    assert faults.nonfinite_flag(torch.tensor(1.0), optimizer)
    infinite_norm = torch.tensor(float("inf"))
    assert faults.nonfinite_flag(torch.tensor(1.0), optimizer, grad_norm=infinite_norm)


def test_fp16_scaler_skips_a_nan_step_and_the_batchnorm_statistics_stay():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 3, 1))
    before = {key: value.clone() for key, value in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    images, labels = torch.randn(2, 2, 4, 4), torch.randint(0, 3, (2, 4, 4))
    criterion = NaNLoss(LabelSmoothSoftmaxCE(0.1))
    step = loop.train_one_iter(model, criterion, images, labels, optimizer, scaler, torch.float16)
    assert step.skipped is True and scaler.get_scale() == 512.0
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def config_file(tmp_path: Path, max_iters: int, max_nonfinite_steps: int) -> Path:
    """The file of a tiny config with these settings, on a dataset written under `tmp_path`."""
    cfg = tiny_config(
        write_dataset(tmp_path / "data"),
        schedule={"max_iters": max_iters},
        optimizer={"max_nonfinite_steps": max_nonfinite_steps},
        runtime={"vis_samples": 0},
    )
    config.dump(cfg, tmp_path / "tiny.yaml")
    return tmp_path / "tiny.yaml"


def test_too_many_nonfinite_steps_stop_naming_the_iteration_and_the_last_finite_loss(
    tmp_path, monkeypatch, capsys
):
    config_path = config_file(tmp_path, max_iters=8, max_nonfinite_steps=2)
    log = []
    nan_steps(monkeypatch, lambda number: number >= 3, log)
    work_dir = tmp_path / "run"
    assert train_command.run([str(config_path), "--work-dir", str(work_dir)]) == 1

    last_loss = log[1][2]  # the loss of step 2, as the step returned it
    expected = (
        f"training stopped at iter 4: 2 steps in a row had a non-finite loss or gradients "
        f"and were skipped (optimizer.max_nonfinite_steps=2); the last finite loss was "
        f"{last_loss:.6g} at iter 2"
    )
    printed = capsys.readouterr()
    assert expected in printed.err and "".join(printed).count(expected) == 1  # printed once
    assert (work_dir / "train.log").read_text().count(expected) == 1
    latest = checkpoint.load(work_dir / "latest.pth")  # the last good checkpoint, intact
    assert latest["iter"] == 2
    for key, value in log[1][3].items():
        assert torch.equal(latest["model"][key], value), key


def test_weights_that_turned_non_finite_are_never_saved(tmp_path, monkeypatch):
    cfg = tiny_config(
        write_dataset(tmp_path / "data"), schedule={"max_iters": 6}, runtime={"vis_samples": 0}
    )
    real_step = loop.train_one_iter
    calls = []

    def step_then_poison(model, *args, **kwargs):
        result = real_step(model, *args, **kwargs)
        calls.append(1)
        if len(calls) == 4:  # a finite step whose update overflowed, say
            with torch.no_grad():
                next(checkpoint.unwrap_model(model).parameters()).fill_(float("inf"))
        return result

    monkeypatch.setattr(loop, "train_one_iter", step_then_poison)
    work_dir = tmp_path / "run"
    with pytest.raises(faults.NonFiniteError, match="at iter 4 the weights hold inf/NaN"):
        train(cfg, work_dir)
    assert checkpoint.load(work_dir / "latest.pth")["iter"] == 2


# ---- the stop message printed once ----------------------------------------------------------


def test_the_stop_message_is_printed_once(tmp_path, monkeypatch, capsys):
    config_path = config_file(tmp_path, max_iters=4, max_nonfinite_steps=1)
    monkeypatch.setattr(faults.StopSignals, "requested", lambda self: signal.SIGTERM)
    work_dir = tmp_path / "stopped"
    assert train_command.run([str(config_path), "--work-dir", str(work_dir)]) == 143
    stop = f"stopped by SIGTERM after iter 1: saved {work_dir / 'latest.pth'}"
    assert "".join(capsys.readouterr()).count(stop) == 1
    assert (work_dir / "train.log").read_text().count(stop) == 1
