"""Checkpoint I/O: atomic writes, safe loads, and what a training checkpoint holds.

A training checkpoint is a dict of tensors and plain Python values (so it loads with
``torch.load(weights_only=True)``): ``model``, ``optimizer``, ``scheduler``, ``scaler`` state
dicts, ``iter`` (optimizer steps done), ``best_miou``, ``rng`` (see `segls.runtime`),
``config`` (the resolved config as a dict), ``format`` (this layout's version) and, when
``optimizer.ema_decay`` is set, ``ema`` (the averaged model's state: the weights evaluated).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from segls import runtime
from segls.models.weights import key_differences

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "check_training_state",
    "load",
    "load_weights",
    "restore_training_state",
    "resume_state",
    "training_state",
    "unwrap_model",
]

FORMAT_VERSION = 1
_TRAINING_KEYS = ("model", "optimizer", "scheduler", "scaler", "iter", "best_miou", "rng")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, or does not fit the run resuming from it."""


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


_SHOWN_KEYS = 8


def _listed(keys: list[str]) -> str:
    """A few of `keys` for a message, with how many more there are."""
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f", ... ({len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else "")


def _weights_in(state: dict, path: str | os.PathLike) -> tuple[dict, str]:
    """The state dict to run inference with, and where it came from: "ema", "model" or "state_dict".

    The averaged weights (``ema``, an ``AveragedModel`` state: "module."-prefixed keys plus
    ``n_averaged``) are preferred because they are the ones training evaluated.
    """
    if isinstance(state.get("ema"), dict):
        prefix = "module."
        weights = {k[len(prefix) :]: v for k, v in state["ema"].items() if k.startswith(prefix)}
        if not weights:
            raise CheckpointError(f"checkpoint {path}: its 'ema' entry holds no 'module.' weights")
        return weights, "ema"
    if isinstance(state.get("model"), dict):
        return state["model"], "model"
    if state and all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        if all(key.startswith("module.") for key in state):  # saved from a DDP wrapper
            state = {key[len("module.") :]: value for key, value in state.items()}
        return state, "state_dict"
    raise CheckpointError(
        f"checkpoint {path} has no 'model' or 'ema' weights and is not a state dict "
        f"(its keys: {_listed([str(key) for key in state])})"
    )


def load_weights(model: nn.Module, path: str | os.PathLike) -> str:
    """Load a checkpoint's weights into `model` for inference; returns which weights were used.

    A training checkpoint gives its ``ema`` weights when it has them, else ``model``; any
    other file must be a bare state dict. Weights that do not fit raise CheckpointError
    naming the missing and unexpected keys and the shape mismatches; `model` is then left
    untouched.
    """
    weights, source = _weights_in(load(path), path)
    target = unwrap_model(model)
    expected = target.state_dict()
    missing, unexpected, mis_shaped = key_differences(expected, weights)
    shapes = [
        f"{key} {tuple(weights[key].shape)} in the checkpoint, "
        f"{tuple(expected[key].shape)} in the model"
        for key in mis_shaped
    ]
    problems = [
        f"{label} ({len(items)}): {_listed(items)}"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        )
        if items
    ]
    if problems:
        raise CheckpointError(
            f"checkpoint {path} ({source} weights) does not fit the model built from the config: "
            + "; ".join(problems)
            + ". Use the config the checkpoint was trained with (config.yaml in its work dir)"
        )
    target.load_state_dict(weights)
    return source
