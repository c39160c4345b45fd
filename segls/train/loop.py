"""The training loop: iteration-based, one readable function per step.

`train` checks the work dir (`segls.train.workdir`) and, when resuming, the checkpoint's
config (`segls.train.resume`), builds a `Run` (`segls.train.build.build_run`: data, model and
the rest, all checked before anything is written), puts the checkpoint back into it
(`segls.train.checkpoint.restore`), opens the records, then repeats `train_one_iter` at the
learning rate of each iteration (`segls.train.optim.learning_rate`). Every
``schedule.checkpoint_interval`` iterations (and at the end) it saves ``latest.pth``, then,
every ``schedule.eval_interval`` (and at the end), evaluates (`segls.train.validation`);
``best.pth`` is saved whenever val mIoU improves. A checkpoint written before its
evaluation says so (``eval_pending``): a run resumed from it evaluates first unless
metrics.jsonl shows the evaluation done. The work dir also gets config.yaml (the resolved
config, enough to repeat the run) and the records of `segls.train.logger.RunLogger`; an
error that ends a run is written to train.log too.

Resuming is exact (bit-identical weights on the CPU with ``num_workers=0``): the checkpoint
holds the model, optimizer, scaler, EMA and the global RNG states, the learning rate is a
function of the iteration, and the data stream is a function of (seed, epoch) that
`segls.data.InfiniteLoader` re-enters mid-epoch.

A step reports a `StepResult`. Only what changes the run's state takes the whole `Run`: the
loop, `_step` (weights, optimizer, scaler, EMA, data position), `_validate` and
`_finish_pending_eval` (best mIoU, best.pth) and the checkpoint's `save` and `restore`;
the other helpers get the parts they read.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from segls import runtime
from segls.config import Config
from segls.data import InfiniteLoader
from segls.runtime import distributed, progress
from segls.train import checkpoint, faults
from segls.train.build import Run, build_run, describe, open_records
from segls.train.census import ClassCensus
from segls.train.logger import TrainWindow
from segls.train.optim import learning_rate, set_lr, update_ema
from segls.train.resume import check_resume_config
from segls.train.validation import Validation
from segls.train.workdir import check_work_dir, clear_records, drop_unsaved_records

__all__ = ["StepResult", "train", "train_one_iter"]


def train(
    cfg: Config,
    work_dir: str | Path,
    resume: str | Path | bool | None = None,
    overwrite: bool = False,
) -> dict:
    """Train as `cfg` says, recording into `work_dir`; returns the final validation scores.

    `resume` is None (fresh run), True (the work dir's latest.pth, or the newest intact
    checkpoint there, see `segls.train.checkpoint.resume_state`) or a checkpoint path; the
    run then continues at the checkpoint's iteration with all states restored. A fresh run
    into a work dir holding another run's records needs `overwrite`, which deletes them
    (`segls.train.workdir`). Under torchrun every process trains a DDP replica
    (`segls.runtime.distributed`) and only rank 0 writes. Non-finite steps, SIGTERM and
    Ctrl-C are handled as `segls.train.faults` says.
    """
    work_dir = Path(work_dir)
    records = check_work_dir(work_dir, fresh=resume is None or resume is False, overwrite=overwrite)
    resume_path, state, resume_note = checkpoint.resume_state(work_dir, resume)
    changes = [] if state is None else check_resume_config(state, resume_path, cfg)
    run = build_run(cfg, work_dir, start_iter=0 if state is None else int(state["iter"]))
    try:
        if state is not None:
            checkpoint.restore(run, state, resume_path)
        if records and run.context.is_main:
            clear_records(work_dir, records)
        pending_eval = state is not None and bool(state.get("eval_pending"))
        open_records(run, pending_eval)
        if records:
            names = ", ".join(path.name for path in records)
            run.logger.info(f"deleted the previous run's records in {work_dir} ({names})")
        if resume_note:
            run.logger.info(resume_note)
        if state is not None:
            for line in [f"resumed from {resume_path} at iter {run.start_iter}", *changes]:
                run.logger.info(line)
        return _train_loop(run, pending_eval)
    except BaseException as error:
        with contextlib.suppress(OSError):  # a train.log on the full disk that ended the run
            run.logger.record(_ending(error))
            if state is None and run.context.is_main:
                # Close the event file first: its writer appends on a flush, and a flush after
                # the deletion (at close, or from its thread) would write the file back.
                run.logger.close()
                if note := drop_unsaved_records(work_dir):
                    run.logger.record(note)  # a fresh run that never saved: nothing blocks a rerun
        raise
    finally:
        run.close()


def _ending(error: BaseException) -> str:
    """The train.log line of an error that ends a run (the command line prints it itself)."""
    if isinstance(error, faults.TrainingInterrupted):
        return str(error)
    if type(error).__module__.split(".")[0] == "segls":
        return f"error: {error}"
    return f"error: {type(error).__name__}: {error}"


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step (`train_one_iter`) did."""

    loss: torch.Tensor  # detached, on the device: reading it is a host sync
    grad_norm: torch.Tensor | None  # the total norm before clipping, with a grad_clip
    skipped: bool  # non-finite on some rank: the model is as it was before the step
    stop: int  # the signal that asked some rank to stop after this step, 0 for none


@dataclass(frozen=True)
class Iteration:
    """One iteration of the loop (`_step`): its optimizer step, learning rate and batch."""

    step: StepResult
    lr: float
    labels: torch.Tensor
    nonfinite_images: list[str]  # of a skipped step: the batch's images holding NaN/inf


def _train_loop(run: Run, pending_eval: bool) -> dict:
    """Train from ``run.start_iter`` to ``schedule.max_iters``; returns the final scores."""
    sched, log, work_dir = run.cfg.schedule, run.logger.info, run.work_dir
    latest = work_dir / "latest.pth"
    log(describe(run))
    validation = Validation(
        run.eval_model, run.val_loader, run.criterion, run.settings, run.device, run.amp_dtype,
        run.cfg, run.logger,
    )  # fmt: skip
    scores = _finish_pending_eval(run, validation) if pending_eval else None
    if run.start_iter >= sched.max_iters and scores is None:
        log(
            f"nothing to train: the checkpoint is at iter {run.start_iter} and "
            f"schedule.max_iters={sched.max_iters}; raise schedule.max_iters to train on"
        )
        return validation.scores(run.start_iter)
    guard = faults.NonFiniteGuard(run.cfg.optimizer.max_nonfinite_steps, log)
    census = None
    if run.start_iter == 0:
        first_pass = min(len(run.train_loader), sched.max_iters)
        class_names, ignore_index = run.val_loader.dataset.class_names, run.cfg.data.ignore_index
        census = ClassCensus(class_names, ignore_index, first_pass, run.device, log)
    window, clock = TrainWindow(), time.perf_counter()
    bar = progress(sched.max_iters, "train", initial=run.start_iter)
    run.stop.install()
    for iteration in range(run.start_iter + 1, sched.max_iters + 1):
        done = _step(run, iteration)
        step = done.step
        window.add(step.loss, done.labels.shape[0], step.skipped)
        guard.update(iteration, step.loss, step.skipped, done.nonfinite_images)
        bar.update(1)
        is_last = iteration == sched.max_iters
        if iteration % sched.log_interval == 0 or is_last:
            values = _train_values(done, window, run.scaler, run.device)
            seconds_per_iter = (time.perf_counter() - clock) / (iteration - run.start_iter)
            eta = seconds_per_iter * (sched.max_iters - iteration)
            run.logger.train_line(iteration, sched.max_iters, values, eta)
            bar.set_postfix(loss=f"{values['train/loss']:.4f}")
            window = TrainWindow()
        due_eval = iteration % sched.eval_interval == 0 or is_last
        if census is not None:
            census = census.add(done.labels, iteration, evaluating=due_eval)
        saved = iteration % sched.checkpoint_interval == 0 or is_last
        if saved:  # before evaluating: an evaluation that fails loses no training
            checkpoint.save(run, iteration, [latest], eval_pending=due_eval)
        if due_eval:
            scores = _validate(run, validation, iteration, window)
        if step.stop:
            if not saved:
                checkpoint.save(run, iteration, [latest])
            raise faults.interrupt(step.stop, iteration, latest)
    run.stop.uninstall()
    bar.close()
    best = f"{100 * run.best_miou:.2f}" if math.isfinite(run.best_miou) else "-"
    log(
        f"done: final mIoU {100 * scores['mIoU']:.2f}, mAcc {100 * scores['mAcc']:.2f}, "
        f"aAcc {100 * scores['aAcc']:.2f} | best mIoU {best} | work dir {work_dir}"
    )
    return scores


def _finish_pending_eval(run: Run, validation: Validation) -> dict | None:
    """The evaluation due at the checkpoint's iteration, when the checkpoint predates it.

    If metrics.jsonl holds it, the run died after it and only best_miou is brought up to
    date (best.pth and the TensorBoard records are written before the row); else it runs now
    (`RunLogger.open` hid whatever part of its records a killed run left), and its scores
    are returned.
    """
    row = run.logger.metrics_row(run.start_iter)
    if row is None:
        return _validate(run, validation, run.start_iter, TrainWindow())
    miou = math.nan if row.get("mIoU") is None else float(row["mIoU"])
    if miou > run.best_miou:
        run.best_miou = miou
    return None


def _step(run: Run, iteration: int) -> Iteration:
    """Iteration `iteration`: set its learning rate, train on the next batch, average weights."""
    lr = learning_rate(iteration - 1, run.cfg.optimizer, run.cfg.schedule)
    set_lr(run.optimizer, lr)
    with runtime.lower_on_oom(f"training at iter {iteration}", faults.TRAIN_MEMORY):
        images, labels = next(run.batches)
        images = images.to(run.device, non_blocking=True, memory_format=run.memory_format)
        labels = labels.to(run.device, non_blocking=True)
        step = train_one_iter(
            run.train_model, run.objective, images, labels, run.optimizer, run.scaler,
            run.amp_dtype, run.cfg.optimizer.grad_clip, run.stop,
        )  # fmt: skip
    if run.ema is not None:
        update_ema(run.ema, run.model)
    bad = _nonfinite_images(run.batches, images) if step.skipped else []
    return Iteration(step, lr, labels, bad)


def _nonfinite_images(batches: InfiniteLoader, images: torch.Tensor) -> list[str]:
    """The images of the batch just trained whose pixels hold NaN/inf, by file where known."""
    bad = (~torch.isfinite(images).flatten(1).all(dim=1)).nonzero().flatten().tolist()
    names = batches.last_batch_names() if bad else None
    return [names[index] if names else f"image {index} of the batch" for index in bad]


def train_one_iter(
    model: nn.Module,
    criterion: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype | None = None,
    grad_clip: float | None = None,
    stop_signals: faults.StopSignals | None = None,
) -> StepResult:
    """One optimizer step on a batch: the loss (a tensor), grad norm, whether skipped, stop.

    A step whose loss or gradients hold inf/NaN on any rank is skipped
    (`segls.train.faults.nonfinite_flag`); with float16 one whose gradients overflowed, by
    the `scaler`'s own check, after which ``scaler.update`` lowers the scale. A skipped step
    leaves the model as it was, BatchNorm statistics included. Gradients are unscaled before
    clipping so `grad_clip` is a norm of the true gradients. Whether to skip and ``stop``
    (the signal that asked this process, through `stop_signals`, or any other rank to stop;
    0 for none) are agreed in the step's only host sync (`segls.train.faults.agree`).
    """
    model.train()
    buffers = faults.snapshot_buffers(model)
    with runtime.autocast(images.device, amp_dtype):
        logits = model(images)
    loss = criterion(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # nothing to do without float16
    grad_norm = None
    if grad_clip is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler.is_enabled():
        bad = faults.overflow_flag(scaler, optimizer)
    else:
        bad = faults.nonfinite_flag(loss, optimizer, grad_norm)
    skipped, signum = faults.agree(bad, stop_signals.requested() if stop_signals else 0)
    if not skipped:
        optimizer.step()  # what scaler.step does after its own read of the flag
    scaler.update()
    if skipped:
        faults.restore_buffers(model, buffers)
    return StepResult(loss.detach(), grad_norm, skipped, signum)


def _train_values(
    done: Iteration, window: TrainWindow, scaler: torch.amp.GradScaler, device: torch.device
) -> dict[str, float]:
    """The train/* scalars of a log line: `window`'s means and this iteration's state."""
    values = {"train/lr": done.lr, **window.summary()}
    if done.step.grad_norm is not None:
        values["train/grad_norm"] = float(done.step.grad_norm)
    values["train/skipped_steps"] = window.skipped
    if scaler.is_enabled():
        values["train/grad_scale"] = scaler.get_scale()
    if device.type == "cuda":
        values["train/peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return values


def _validate(run: Run, validation: Validation, iteration: int, window: TrainWindow) -> dict:
    """Evaluate during training, keep best.pth, then record; time left out of throughput.

    Every rank evaluates with rank 0's BatchNorm statistics, as the checkpoint has them.
    best.pth is written before the scores are recorded (see `_finish_pending_eval`).
    """
    start = time.perf_counter()
    distributed.broadcast_buffers(validation.model)
    with runtime.lower_on_oom(f"the evaluation at iter {iteration}", runtime.EVAL_MEMORY):
        scores = validation.scores(iteration)
    if scores["mIoU"] > run.best_miou:
        run.best_miou = scores["mIoU"]
        checkpoint.save(run, iteration, [run.work_dir / "best.pth"])
    validation.record(iteration, scores)
    window.start += time.perf_counter() - start  # throughput of training only
    return scores
