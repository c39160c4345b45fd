"""Everything a training run needs, built from a Config in one place: `build_run` → `Run`."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader

from segls import io, losses, runtime
from segls.config import Config, dump, validate
from segls.data import (
    InfiniteLoader,
    build_loaders,
    check_crop_size,
    check_first_batch,
    shut_down,
)
from segls.data import sample as sample_data
from segls.losses import LabelSmoothSoftmaxCE
from segls.models import InferenceSettings, build_model, settings_from_config
from segls.models.factory import HEAD_ALIGN_CORNERS
from segls.predict import build_criterion
from segls.runtime import distributed
from segls.train.faults import StopSignals
from segls.train.logger import RunLogger
from segls.train.optim import build_ema, build_optimizer
from segls.train.workdir import cannot_write

__all__ = ["Run", "build_objective", "build_run", "describe", "open_records"]


def build_objective(cfg: Config, criterion: LabelSmoothSoftmaxCE) -> nn.Module:
    """What training minimises: the criterion, plus ``loss.lovasz_weight`` × Lovász-softmax.

    Evaluation reports the criterion alone, so validation losses stay comparable across runs.
    The objective has the criterion's options (and class weights, on its device) but for one:
    training's labels were checked as their masks were read (`segls.data.LabelMapper`), so
    it does not check them again: on CUDA that costs a host sync every step. With
    ``loss.upsample: fused`` the model's logits are at 1/4 or 1/8 of the labels' size and the
    objective upsamples them itself, as the head would have (bilinear, ``align_corners=True``);
    the Lovász term gets them upsampled too (`segls.losses.PlusLovasz`).
    """
    fused = cfg.loss.upsample == "fused"
    return losses.build_criterion(
        replace(criterion.options, check_labels=False),
        backend=criterion.compute.backend,
        upsample="bilinear" if fused else None,
        align_corners=HEAD_ALIGN_CORNERS if fused else False,
        lovasz_weight=cfg.loss.lovasz_weight,
    )


@dataclass
class Run:
    """A training run: its config, records, data, model, loss, optimizer and position."""

    cfg: Config
    work_dir: Path
    context: distributed.Context  # rank, world size and the device this process trains on
    amp_dtype: torch.dtype | None
    memory_format: torch.memory_format
    logger: RunLogger
    stop: StopSignals
    train_loader: DataLoader
    val_loader: DataLoader
    model: nn.Module  # the plain network: what checkpoints and the EMA hold
    train_model: nn.Module  # the network as stepped: in DDP and/or compiled
    criterion: LabelSmoothSoftmaxCE  # what evaluation reports
    objective: nn.Module  # what training minimises
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: AveragedModel | None
    settings: InferenceSettings  # how validation predicts (the eval section)
    batches: InfiniteLoader
    start_iter: int = 0
    best_miou: float = -math.inf

    @property
    def device(self) -> torch.device:
        """The device this process trains on."""
        return self.context.device

    @property
    def eval_model(self) -> nn.Module:
        """The network that is evaluated and exported: the weight average when there is one."""
        return self.model if self.ema is None else self.ema.module

    def close(self) -> None:
        """Give back the signal handlers, stop the loader workers, close the records, leave the group.

        The workers are stopped on every path out of a run, an error included: they ignore
        SIGTERM, and left up they would keep the process from exiting (`segls.data.shut_down`).
        """
        self.stop.uninstall()
        self.batches.close()
        shut_down(self.val_loader)
        self.logger.close()
        distributed.cleanup(self.context)


def build_run(cfg: Config, work_dir: str | Path, start_iter: int = 0) -> Run:
    """Set up the process and build everything training `cfg` into `work_dir` needs.

    `cfg` is checked first (`segls.config.validate`: a Config built or edited in Python
    enters here), so nothing below checks its values again. Threads, determinism and seeds
    are applied (`segls.runtime.configure`) before anything random is built, and the order
    below is fixed: the model's initial weights depend on it. Every validation mask and
    the first training batch are read here, so bad data fails now. Nothing is written into
    `work_dir` until `open_records`. `start_iter` is where a resumed run continues
    (`segls.train.checkpoint.restore` puts the rest back), so that the records after it are
    dropped. Under torchrun every process joins the group and builds its replica; only
    rank 0 writes.
    """
    validate(cfg)
    work_dir = Path(work_dir)
    device = runtime.configure(cfg.runtime)
    amp_dtype = runtime.amp_dtype(cfg.runtime.amp, device)
    context = distributed.setup(device)
    logger = RunLogger(work_dir, start_iter, active=context.is_main, deferred=True)
    train_loader = val_loader = None
    try:
        if context.is_main:
            sample_data.prepare_if_bundled(cfg.data.root, logger.info)
        distributed.barrier()
        train_loader, val_loader = build_loaders(cfg, context.rank, context.world_size)
        check_crop_size(train_loader.dataset, cfg.data)
        val_loader.dataset.check_masks()
        check_first_batch(train_loader)
        memory_format = torch.channels_last if cfg.runtime.channels_last else torch.preserve_format
        model = build_model(
            cfg.model, cfg.data.in_channels, cfg.data.num_classes, cfg.loss.upsample
        )
        model = model.to(context.device, memory_format=memory_format)
        model = distributed.convert_sync_bn(model, cfg.runtime.sync_bn, context)
        train_model = distributed.wrap_ddp(model, context)
        train_model = torch.compile(train_model) if cfg.runtime.compile else train_model
        criterion = build_criterion(cfg).to(context.device)
        return Run(
            cfg, work_dir, context, amp_dtype, memory_format, logger, StopSignals(),
            train_loader, val_loader, model, train_model, criterion,
            objective=build_objective(cfg, criterion),
            optimizer=build_optimizer(model, cfg.optimizer),
            scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16),
            ema=build_ema(model, cfg.optimizer.ema_decay),
            settings=settings_from_config(cfg),
            batches=InfiniteLoader(train_loader, cfg.runtime.seed, 0, context.rank),
        )  # fmt: skip
    except BaseException:
        shut_down(train_loader)
        shut_down(val_loader)
        logger.close()
        distributed.cleanup(context)
        raise


def open_records(run: Run, eval_pending: bool = False) -> None:
    """Start writing into the work dir (rank 0): records, config.yaml; a killed save's leftovers go.

    `eval_pending`: the checkpoint resumed from predates its evaluation (`RunLogger.open`).

    A write that fails (a read-only or full disk) is a one-line WorkDirError.
    """
    if not run.context.is_main:
        return
    try:
        run.logger.open(eval_pending)
        for path in io.remove_stale_temp_files(run.work_dir):
            run.logger.info(f"removed {path}, left by a save that was interrupted")
        dump(run.cfg, run.work_dir / "config.yaml")
        run.logger.record_config(run.cfg, run.start_iter)
    except OSError as error:
        raise cannot_write(error.filename or run.work_dir, error) from error


def describe(run: Run) -> str:
    """The line that opens a run's log: what trains, where, for how long, on how much data."""
    cfg, world = run.cfg, run.context.world_size
    processes = f" x {world} processes" if world > 1 else ""
    repeat = f" (x{cfg.data.repeat} per epoch)" if cfg.data.repeat > 1 else ""
    return (
        f"training {cfg.model.arch}/{cfg.model.encoder} on {run.device}{processes} (amp "
        f"{cfg.runtime.amp}) for {cfg.schedule.max_iters} iters, "
        f"{len(run.train_loader.dataset.image_paths)} train{repeat} / "
        f"{len(run.val_loader.dataset)} val images; work dir {run.work_dir}"
    )
