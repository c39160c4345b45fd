"""Checkpoints: what a training checkpoint holds, and where it is written, read and restored.

A training checkpoint is a dict of tensors and plain Python values (so it loads with
``torch.load(weights_only=True)``): ``model``, ``optimizer`` and ``scaler`` state dicts,
``iter`` (optimizer steps done), ``best_miou``, ``rng`` (see `segls.runtime.seeds`),
``config`` (the resolved config as a dict), ``format`` (this layout's version),
``eval_pending`` (written before the evaluation due at ``iter``: whether one was due) and,
when ``optimizer.ema_decay`` is set, ``ema`` (the averaged model's state: the weights
evaluated); one written by `save` also holds ``world_size`` (the number of processes, which
`segls.train.resume` compares). `save` writes one from a `segls.train.Run` and `restore`
puts all of it back into one. Format 1 also held the learning-rate scheduler's state, which the iteration now
replaces; it is still read (and that entry ignored).

Every file is written with a CRC-32 of its bytes and read by `segls.models.checkpoint.load`
(also what test, infer and export read with), which checks it: a file whose bytes changed is
damaged, like a truncated one. A resumed run
must have the config the checkpoint was written with, but for the keys that
`segls.train.resume` lets change.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from segls import io, runtime
from segls.config import to_dict
from segls.data import InfiniteLoader
from segls.models.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    check_format,
    load,
    unwrap_model,
)
from segls.train.faults import check_finite_weights
from segls.train.optim import build_ema
from segls.train.workdir import cannot_write

if TYPE_CHECKING:
    from segls.train.build import Run

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "check_training_state",
    "load",
    "load_states",
    "restore",
    "resume_state",
    "save",
    "training_state",
    "unwrap_model",
]

_TRAINING_KEYS = ("format", "model", "optimizer", "scaler", "iter", "best_miou", "rng")


def training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    iteration: int,
    best_miou: float,
    config: dict,
    ema: nn.Module | None = None,
    eval_pending: bool = False,
) -> dict:
    """Everything needed to continue a run exactly where it stopped (see the module docstring).

    With weight averaging, ``ema`` holds the averaged model's state (the weights evaluated).
    """
    state = {
        "format": FORMAT_VERSION,
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "iter": iteration,
        "best_miou": best_miou,
        "rng": runtime.get_rng_state(),
        "config": config,
        "eval_pending": eval_pending,
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
    check_format(state, path)
    return int(state["iter"])


def _load_training(path: Path) -> dict:
    """`load` a file and check that it is a training checkpoint."""
    state = load(path)
    check_training_state(state, path)
    return state


def _newest_intact(work_dir: Path, skip: Path) -> tuple[Path, dict] | None:
    """The training checkpoint among `work_dir`'s ``*.pth`` (but `skip`) with the highest iter."""
    found = []
    for path in sorted(work_dir.glob("*.pth")):
        if path == skip:
            continue
        try:
            found.append((path, _load_training(path)))
        except CheckpointError:
            continue
    return max(found, key=lambda item: int(item[1]["iter"]), default=None)


def resume_state(
    work_dir: str | os.PathLike, resume: str | os.PathLike | bool | None
) -> tuple[Path | None, dict | None, str | None]:
    """The checkpoint to resume from, read and checked: (path, state, note to log).

    `resume` is None/False (a fresh run: all None), a path (which must load, else
    CheckpointError naming it), or True: the work dir's latest.pth, or when that is missing,
    truncated or corrupt, the newest intact training checkpoint in the work dir (e.g.
    best.pth), with a note that says so. None intact is a CheckpointError.
    """
    if resume is None or resume is False:
        return None, None, None
    if resume is not True:
        return Path(resume), _load_training(Path(resume)), None
    work_dir = Path(work_dir)
    latest = work_dir / "latest.pth"
    try:
        return latest, _load_training(latest), None
    except CheckpointError as error:
        problem = error
    found = _newest_intact(work_dir, skip=latest)
    if found is None:
        if not latest.exists():
            raise CheckpointError(
                f"cannot resume: {latest} does not exist and {work_dir} holds no other intact "
                "training checkpoint; start without --resume, or pass the checkpoint to resume from"
            )
        raise CheckpointError(
            f"cannot resume: {problem}; {work_dir} holds no other intact training checkpoint"
        ) from problem
    path, state = found
    note = (
        f"cannot resume from {latest}: {problem}\nresuming from {path} (iter {state['iter']}) "
        f"instead, the newest intact training checkpoint in {work_dir}"
    )
    return path, state, note


def save(run: Run, iteration: int, paths: Iterable[Path], eval_pending: bool = False) -> None:
    """Write `run`'s state after `iteration` to each of `paths` (only rank 0 writes).

    Weights that turned inf/NaN are refused first (`check_finite_weights`), on every rank.
    `eval_pending`: the evaluation due at `iteration` has not run yet. A failed write (a
    full disk) is a WorkDirError naming the file; the file on disk stays as it was.
    """
    check_finite_weights(run.model, iteration)
    if not run.context.is_main:
        return
    state = training_state(
        run.model, run.optimizer, run.scaler, iteration, run.best_miou, to_dict(run.cfg),
        run.ema, eval_pending,
    )  # fmt: skip
    state["world_size"] = run.context.world_size  # what resume compares the total batch with
    for path in paths:
        try:
            io.write_torch(path, state)
        except OSError as error:
            raise cannot_write(path, error) from error
        run.logger.info(f"saved {path}")


def load_states(
    state: dict,
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> None:
    """Load a training checkpoint's network, optimizer and grad-scaler states (part of `restore`).

    The optimizer's state (momenta) comes from the checkpoint, its hyper-parameters stay
    those it was built with.
    """
    built = [
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
    for group, hyper_parameters in zip(optimizer.param_groups, built, strict=True):
        group.update(hyper_parameters)
    if state["scaler"]:
        scaler.load_state_dict(state["scaler"])


def restore(run: Run, state: dict, path: str | os.PathLike) -> None:
    """Put a training checkpoint (`state`, read from `path`) back into `run`, all of it.

    Weights, optimizer state (momenta), grad scaler, EMA, best mIoU, the iteration, the
    position in the data stream and the global random generators. The optimizer's
    hyper-parameters (weight decay, momentum, betas) stay those the run was built with, and
    the learning rate follows from the iteration, so a config changed for the resumed run
    takes effect at once. The random generators come last, once the data stream has been
    positioned (`segls.data.InfiniteLoader` reads batches to get there).
    """
    run.start_iter = check_training_state(state, path)
    load_states(state, path, run.model, run.optimizer, run.scaler)
    if run.ema is not None and "ema" in state:
        run.ema.load_state_dict(state["ema"])
    elif run.ema is not None:  # weight averaging switched on for the resumed run
        run.ema = build_ema(run.model, run.cfg.optimizer.ema_decay)
    run.best_miou = float(state["best_miou"])
    seed, rank = run.cfg.runtime.seed, run.context.rank
    run.batches = InfiniteLoader(run.train_loader, seed, run.start_iter, rank)
    runtime.set_rng_state(state["rng"])
