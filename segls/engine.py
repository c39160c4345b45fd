"""The training loop: iteration-based, one readable function per step.

`train` builds everything from a Config, then repeats `train_one_iter`; every
``schedule.eval_interval`` iterations (and at the end) it runs `evaluate`, and every
``schedule.checkpoint_interval`` (and at the end) it saves ``latest.pth``; ``best.pth`` is
saved whenever val mIoU improves. The work dir also gets config.yaml (the resolved config,
enough to repeat the run) and the records of `segls.logger.RunLogger`.

Resuming is exact (bit-identical weights on the CPU with ``num_workers=0``): the checkpoint
holds the model, optimizer, scheduler, scaler and the global RNG states, and the data
stream is a function of (seed, epoch) that `segls.data.InfiniteLoader` re-enters mid-epoch.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from segls import checkpoint, faults, io, runtime
from segls.config import Config, dump, to_dict
from segls.data import InfiniteLoader, build_loaders
from segls.data import sample as sample_data
from segls.logger import RunLogger, TrainWindow
from segls.losses import LabelSmoothSoftmaxCE, PlusLovasz
from segls.metrics import format_table
from segls.models import build_model, settings_from_config
from segls.optim import build_ema, build_optimizer, build_scheduler
from segls.predict import evaluate, sample_panels
from segls.predict.plots import reliability_diagram
from segls.runtime import distributed, progress

__all__ = [
    "build_criterion",
    "build_objective",
    "build_optimizer",
    "build_scheduler",
    "train",
    "train_one_iter",
]


def build_criterion(cfg: Config) -> LabelSmoothSoftmaxCE:
    """The label-smoothing cross-entropy configured by ``loss`` and ``data.ignore_index``.

    ``lb_pos``/``lb_neg``, when set, replace ``lb_smooth`` (the config documents this).
    """
    loss_cfg = cfg.loss
    explicit = loss_cfg.lb_pos is not None
    return LabelSmoothSoftmaxCE(
        None if explicit else loss_cfg.lb_smooth,
        lb_pos=loss_cfg.lb_pos,
        lb_neg=loss_cfg.lb_neg,
        ignore_index=cfg.data.ignore_index,
        weight=loss_cfg.class_weight,
        check_labels=loss_cfg.check_labels,
        backend=loss_cfg.backend,
    )


def build_objective(cfg: Config, criterion: LabelSmoothSoftmaxCE) -> nn.Module:
    """What training minimises: the criterion, plus ``loss.lovasz_weight`` × Lovász-softmax.

    Evaluation reports the criterion alone, so validation losses stay comparable across runs.
    """
    if cfg.loss.lovasz_weight > 0:
        return PlusLovasz(criterion, cfg.loss.lovasz_weight, cfg.data.ignore_index)
    return criterion


def train_one_iter(
    model: nn.Module,
    criterion: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype | None = None,
    grad_clip: float | None = None,
) -> dict:
    """One optimizer step on a batch; returns the loss (a tensor), grad norm and whether skipped.

    With float16 the `scaler` scales the loss; a step whose gradients overflowed is skipped
    by the scaler, which then lowers its scale, so ``skipped`` is read from that decrease.
    Otherwise a step whose loss or gradients hold inf/NaN on any rank is skipped
    (`segls.faults.nonfinite`). A skipped step leaves the model as it was, BatchNorm
    statistics included. Gradients are unscaled before clipping so `grad_clip` is a norm of
    the true gradients.
    """
    model.train()
    buffers = faults.snapshot_buffers(model)
    with runtime.autocast(images.device, amp_dtype):
        logits = model(images)
    loss = criterion(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    grad_norm = None
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler.is_enabled():
        scale_before = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        skipped = scaler.get_scale() < scale_before
    else:
        skipped = faults.nonfinite(loss, optimizer, grad_norm)
        if not skipped:
            optimizer.step()
    if skipped:
        faults.restore_buffers(model, buffers)
    return {"loss": loss.detach(), "grad_norm": grad_norm, "skipped": skipped}


def _evaluate_and_record(
    model: nn.Module,
    loader: DataLoader,
    cfg: Config,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    criterion: nn.Module,
    logger: RunLogger,
    iteration: int,
    record: bool = True,
) -> dict:
    """`evaluate`, then print the table and (if `record`) log scores and image panels."""
    scores = evaluate(
        model, loader, cfg.data.num_classes, cfg.data.ignore_index, device, amp_dtype, criterion,
        calibration_bins=cfg.eval.calibration_bins, settings=settings_from_config(cfg),
    )  # fmt: skip
    class_names = loader.dataset.class_names
    logger.info(
        f"eval at iter {iteration}: val loss {scores['loss']:.4f}\n"
        + format_table(scores, class_names)
    )
    if record and distributed.is_main():
        logger.evaluation(iteration, scores, class_names)
        title = f"val reliability, iter {iteration} (ECE {100 * scores['ECE']:.2f}%)"
        diagram = reliability_diagram(scores["calibration"], title)
        logger.image("val/reliability", diagram, iteration)
        panels = sample_panels(
            model, loader.dataset, cfg.runtime.vis_samples, device, settings_from_config(cfg),
            amp_dtype, cfg.data.mean, cfg.data.std, cfg.data.ignore_index,
        )  # fmt: skip
        for index, image in enumerate(panels):
            logger.image(f"val/sample_{index}", image, iteration)
    return scores


def _train_values(
    window: TrainWindow,
    lr: float,
    step: dict,
    scaler: torch.amp.GradScaler,
    device: torch.device,
) -> dict[str, float]:
    """The train/* scalars of a log line: window averages plus this step's state."""
    values = {"train/lr": lr, **window.summary()}
    if step["grad_norm"] is not None:
        values["train/grad_norm"] = float(step["grad_norm"])
    values["train/skipped_steps"] = window.skipped
    if scaler.is_enabled():
        values["train/grad_scale"] = scaler.get_scale()
    if device.type == "cuda":
        values["train/peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return values


def train(cfg: Config, work_dir: str | Path, resume: str | Path | bool | None = None) -> dict:
    """Train as `cfg` says, recording into `work_dir`; returns the final validation scores.

    `resume` is None (fresh run), True (the work dir's latest.pth, or the newest intact
    checkpoint there, see `segls.checkpoint.resume_state`) or a checkpoint path; the run then
    continues at the checkpoint's iteration with all states restored. Under torchrun every
    process trains a DDP replica (`segls.runtime.distributed`) and only rank 0 writes. Non-finite
    steps, SIGTERM and Ctrl-C are handled as `segls.faults` describes.
    """
    work_dir = Path(work_dir)
    resume_path, state, resume_note = checkpoint.resume_state(work_dir, resume)
    device = runtime.configure(cfg.runtime)
    amp_dtype = runtime.amp_dtype(cfg.runtime.amp, device)
    memory_format = torch.channels_last if cfg.runtime.channels_last else torch.preserve_format
    sched = cfg.schedule

    start_iter = 0 if state is None else int(state["iter"])
    context = distributed.setup(device)
    device = context.device
    logger = RunLogger(work_dir, start_iter, active=context.is_main)
    stop = faults.StopSignals()
    try:
        if resume_note:
            logger.info(resume_note)
        if resume_path is None and (work_dir / "latest.pth").exists():
            logger.info(f"{work_dir} holds a previous run; starting afresh (--resume continues)")
        if context.is_main:
            sample_data.prepare_if_bundled(cfg.data.root, logger.info)
            for path in io.remove_stale_temp_files(work_dir):
                logger.info(f"removed {path}, left by a save that was interrupted")
        distributed.barrier()
        train_loader, val_loader = build_loaders(cfg, context.rank, context.world_size)
        model = build_model(cfg.model, cfg.data.in_channels, cfg.data.num_classes)
        model = model.to(device, memory_format=memory_format)
        model = distributed.convert_sync_bn(model, cfg.runtime.sync_bn, context)
        train_model = distributed.wrap_ddp(model, context)
        train_model = torch.compile(train_model) if cfg.runtime.compile else train_model
        criterion = build_criterion(cfg).to(device)
        objective = build_objective(cfg, criterion)
        optimizer = build_optimizer(model, cfg.optimizer)
        scheduler = build_scheduler(optimizer, sched)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
        best_miou = -math.inf
        if resume_path is not None:
            start_iter, best_miou = checkpoint.restore_training_state(
                state, resume_path, model, optimizer, scheduler, scaler
            )
            for group, base_lr, factor in zip(
                optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
            ):
                group["lr"] = base_lr * factor(start_iter)
            logger.info(f"resumed from {resume_path} at iter {start_iter}")
        ema = build_ema(model, cfg.optimizer.ema_decay)
        if ema is not None and resume_path is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
        eval_model = model if ema is None else ema.module
        batches = InfiniteLoader(train_loader, cfg.runtime.seed, start_iter, context.rank)
        if resume_path is not None:
            runtime.set_rng_state(state["rng"])
        if context.is_main:
            dump(cfg, work_dir / "config.yaml")
        config_dict = to_dict(cfg)
        processes = f" x {context.world_size} processes" if context.world_size > 1 else ""
        repeat = f" (x{cfg.data.repeat} per epoch)" if cfg.data.repeat > 1 else ""
        logger.info(
            f"training {cfg.model.arch}/{cfg.model.encoder} on {device}{processes} (amp "
            f"{cfg.runtime.amp}) for {sched.max_iters} iters, "
            f"{len(train_loader.dataset.image_paths)} train{repeat} / "
            f"{len(val_loader.dataset)} val images; work dir {work_dir}"
        )
        guard = faults.NonFiniteGuard(cfg.optimizer.max_nonfinite_steps, logger.info)

        def save(paths: list[Path], iteration: int) -> None:
            """Write the training state after `iteration` to `paths` (rank 0 writes)."""
            faults.check_finite_weights(model, iteration)
            if context.is_main:
                state = checkpoint.training_state(
                    model, optimizer, scheduler, scaler, iteration, best_miou, config_dict, ema
                )
                for path in paths:
                    io.write_torch(path, state)
                    logger.info(f"saved {path}")

        scores = None
        window = TrainWindow()
        bar = progress(sched.max_iters, "train", initial=start_iter)
        run_start = time.perf_counter()
        stop.install()
        for iteration in range(start_iter + 1, sched.max_iters + 1):
            images, labels = next(batches)
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            labels = labels.to(device, non_blocking=True)
            lr = optimizer.param_groups[0]["lr"]
            step = train_one_iter(
                train_model, objective, images, labels, optimizer, scaler, amp_dtype,
                cfg.optimizer.grad_clip,
            )  # fmt: skip
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            window.add(step["loss"], images.shape[0], step["skipped"])
            guard.update(iteration, step["loss"], step["skipped"])
            bar.update(1)
            is_last = iteration == sched.max_iters
            if iteration % sched.log_interval == 0 or is_last:
                seconds_per_iter = (time.perf_counter() - run_start) / (iteration - start_iter)
                eta = seconds_per_iter * (sched.max_iters - iteration)
                values = _train_values(window, lr, step, scaler, device)
                logger.train_line(iteration, sched.max_iters, values, eta)
                bar.set_postfix(loss=f"{values['train/loss']:.4f}")
                window = TrainWindow()
            to_save = []
            if iteration % sched.eval_interval == 0 or is_last:
                eval_start = time.perf_counter()
                distributed.broadcast_buffers(eval_model)  # rank 0's, as the checkpoint has
                scores = _evaluate_and_record(
                    eval_model, val_loader, cfg, device, amp_dtype, criterion, logger, iteration
                )
                window.start += time.perf_counter() - eval_start  # throughput of training only
                if scores["mIoU"] > best_miou:
                    best_miou = scores["mIoU"]
                    to_save.append(work_dir / "best.pth")
            if iteration % sched.checkpoint_interval == 0 or is_last:
                to_save.append(work_dir / "latest.pth")
            if to_save:
                save(to_save, iteration)
            signum = stop.requested()
            if signum:
                latest = work_dir / "latest.pth"
                saved = latest in to_save
                raise faults.interrupt(signum, iteration, save, latest, logger.info, saved)
        stop.uninstall()
        bar.close()
        if scores is None:
            scores = _evaluate_and_record(
                eval_model, val_loader, cfg, device, amp_dtype, criterion, logger, start_iter,
                record=False,
            )  # fmt: skip
        best = f"{100 * best_miou:.2f}" if math.isfinite(best_miou) else "-"
        logger.info(
            f"done: final mIoU {100 * scores['mIoU']:.2f}, mAcc {100 * scores['mAcc']:.2f}, "
            f"aAcc {100 * scores['aAcc']:.2f} | best mIoU {best} | work dir {work_dir}"
        )
        return scores
    finally:
        stop.uninstall()
        logger.close()
        distributed.cleanup(context)
