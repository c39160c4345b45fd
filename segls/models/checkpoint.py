"""Reading checkpoint files, and a model's weights for inference (test, infer, export).

Every checkpoint is read through `segls.io.read_torch`: the CRC-32 written with the file is
checked, then ``torch.load(weights_only=True)`` runs, so a damaged file or one holding
pickled objects is refused with its name. A training checkpoint carries ``format``, the
version of its layout (`FORMAT_VERSION`); a version this segls cannot read is refused. What
else a training checkpoint holds, and how a run is restored from one, is
`segls.train.checkpoint`, which reads its files through `load` here.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from segls import io
from segls.models.weights import listed, state_dict_mismatch

__all__ = [
    "FORMAT_VERSION",
    "READABLE_FORMATS",
    "CheckpointError",
    "check_format",
    "load",
    "load_weights",
    "unwrap_model",
]

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, or does not fit the run resuming from it."""


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint (`segls.io.read_torch`: checksum, weights only); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    try:
        state = io.read_torch(path, map_location)
    except io.UnreadableFileError as error:
        raise CheckpointError(
            f"cannot read checkpoint {error}; use another checkpoint or start afresh"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(state).__name__}, not a dict of states"
        )
    return state


def check_format(state: dict, path: str | os.PathLike) -> None:
    """Raise unless `state` (read from `path`) is in a format this version of segls reads."""
    version = state["format"]
    if version not in READABLE_FORMATS:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}, but this segls reads versions "
            f"{', '.join(map(str, READABLE_FORMATS))}; it was written by another segls version: "
            "use that version, or load its 'model' weights yourself"
        )


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside a ``torch.compile`` and/or DistributedDataParallel wrapper."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


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
        f"(its keys: {listed([str(key) for key in state])})"
    )


def load_weights(model: nn.Module, path: str | os.PathLike) -> str:
    """Load a checkpoint's weights into `model` for inference; returns which weights were used.

    A training checkpoint gives its ``ema`` weights when it has them, else ``model``; any
    other file must be a bare state dict. Weights that do not fit raise CheckpointError
    naming the missing and unexpected keys and the shape mismatches
    (`segls.models.weights.state_dict_mismatch`); `model` is then left untouched.
    """
    state = load(path)
    if "format" in state:
        check_format(state, path)
    weights, source = _weights_in(state, path)
    target = unwrap_model(model)
    problems = state_dict_mismatch(target.state_dict(), weights, "the checkpoint")
    if problems:
        raise CheckpointError(
            f"checkpoint {path} ({source} weights) does not fit the model built from the config: "
            f"{problems}. Use the config the checkpoint was trained with (config.yaml in its "
            "work dir)"
        )
    target.load_state_dict(weights)
    return source
