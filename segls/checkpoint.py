"""Checkpoint I/O: atomic writes, safe loads, and what a training checkpoint holds.

A training checkpoint is a dict of tensors and plain Python values (so it loads with
``torch.load(weights_only=True)``): ``model``, ``optimizer``, ``scheduler``, ``scaler`` state
dicts, ``iter`` (optimizer steps done), ``best_miou``, ``rng`` (see `segls.runtime`),
``config`` (the resolved config as a dict), ``format`` (this layout's version) and, when
``optimizer.ema_decay`` is set, ``ema`` (the averaged model's state: the weights evaluated).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import torch
from torch import nn

from segls import runtime

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "check_training_state",
    "load",
    "restore_training_state",
    "save_atomic",
    "training_state",
    "unwrap_model",
]

FORMAT_VERSION = 1
_TRAINING_KEYS = ("model", "optimizer", "scheduler", "scaler", "iter", "best_miou", "rng")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, or does not fit the run resuming from it."""


def save_atomic(obj: object, path: str | os.PathLike) -> None:
    """Write `obj` with ``torch.save`` so that `path` holds either the old or the new file.

    The data goes to a temporary file in the same directory, is flushed to disk, and then
    replaces `path` in one ``os.replace``; a crash mid-write never leaves a truncated `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp_path = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    # os.open with 0o666 lets the umask set the permissions, as for any other new file.
    descriptor = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            torch.save(obj, handle)
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


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is truncated, corrupt or not a torch file "
            f"({type(error).__name__}: {error}); use another checkpoint or start afresh"
        ) from error
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(state).__name__}, not a dict of states"
        )
    return state


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside a ``torch.compile`` and/or DistributedDataParallel wrapper."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    iteration: int,
    best_miou: float,
    config: dict,
    ema: nn.Module | None = None,
) -> dict:
    """Everything needed to continue a run exactly where it stopped (see the module docstring).

    With weight averaging, ``ema`` holds the averaged model's state (the weights evaluated).
    """
    state = {
        "format": FORMAT_VERSION,
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "iter": iteration,
        "best_miou": best_miou,
        "rng": runtime.get_rng_state(),
        "config": config,
    }
    if ema is not None:
        state["ema"] = ema.state_dict()
    return state


def check_training_state(state: dict, path: str | os.PathLike) -> int:
    """Raise unless `state` (read from `path`) is a training checkpoint; returns its iter."""
    missing = [key for key in _TRAINING_KEYS if key not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks {missing}; it is not a segls training checkpoint "
            "(to start from its weights, use it as model.encoder_weights or load it yourself)"
        )
    return int(state["iter"])


def restore_training_state(
    state: dict,
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> tuple[int, float]:
    """Load `state` (read from `path`) into the run's objects; returns (iter, best_miou).

    The optimizer's state (momenta, current lr) and the scheduler's position come from the
    checkpoint, but the hyper-parameters (base lr, weight decay, momentum, betas) stay those
    the objects were built with, so a config changed for the resumed run takes effect from
    the next scheduler step (`segls.engine.train` also re-applies its schedule at once). The global random generators are not touched here; the caller restores ``state["rng"]``
    once the data iterator has been positioned (see `segls.engine.InfiniteLoader`).
    """
    check_training_state(state, path)
    hyper_parameters = [
        {key: value for key, value in group.items() if key not in ("params", "lr")}
        for group in optimizer.param_groups
    ]
    try:
        unwrap_model(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model/optimizer built from the config: {error}; "
            "resume with the config the checkpoint was written with (its config.yaml)"
        ) from error
    for group, built in zip(optimizer.param_groups, hyper_parameters, strict=True):
        group.update(built)
    scheduler.load_state_dict(state["scheduler"])
    scheduler.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
    if state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    return int(state["iter"]), float(state["best_miou"])
