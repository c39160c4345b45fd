"""What the command lines share: overrides, inference flags, the model for inference, errors.

The inference flags (``--mode slide --crop 512 512 --flip --amp bf16`` ...) are only a
shorter way to write ``eval.*`` and ``runtime.amp`` overrides: `inference_overrides` turns
them into ``key.path=value`` strings that go through `segls.config.load` like any other,
so the config stays the one source of truth and its checks apply to the flags too.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from segls import config, runtime
from segls.config import Config, ConfigError
from segls.data import DataError
from segls.models import MODES, InferenceSettings, build_model, settings_from_config
from segls.train import CheckpointError, TrainingInterrupted, checkpoint

__all__ = [
    "USER_ERRORS",
    "InferenceSetup",
    "add_inference_arguments",
    "inference_overrides",
    "load_model",
    "pull_overrides",
    "run_command",
    "setup_inference",
]

# Errors whose message tells the user what to change: printed as one line, exit status 1.
USER_ERRORS = (ConfigError, CheckpointError, DataError)

_OVERRIDE_RE = re.compile(r"[A-Za-z_]\w*(\.\w+)+=")


def pull_overrides(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """(the other arguments, the ``key.path=value`` overrides) of a command line.

    Taken out before argparse sees them, an override may follow a flag with several values
    (``--scales 0.75 1 1.25 runtime.num_threads=1``) without being read as one of them. A
    token naming an existing file stays an argument.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    overrides = [a for a in argv if _OVERRIDE_RE.match(a) and not os.path.exists(a)]
    return [a for a in argv if a not in overrides], overrides


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags that override ``eval.*`` and ``runtime.amp`` (see `inference_overrides`)."""
    group = parser.add_argument_group("inference (shortcuts for eval.* / runtime.amp overrides)")
    group.add_argument("--mode", choices=MODES, help="eval.mode")
    group.add_argument("--crop", nargs=2, type=int, metavar=("H", "W"), help="eval.crop_size")
    group.add_argument("--stride", nargs=2, type=int, metavar=("H", "W"), help="eval.stride")
    group.add_argument("--flip", action="store_true", help="eval.flip=true")
    group.add_argument("--scales", nargs="+", type=float, metavar="S", help="eval.scales")
    group.add_argument("--amp", choices=tuple(runtime.AMP_DTYPES), help="runtime.amp")


def inference_overrides(args: argparse.Namespace) -> list[str]:
    """``key.path=value`` overrides for the inference flags that were given."""
    overrides = []
    if args.mode is not None:
        overrides.append(f"eval.mode={args.mode}")
    if args.crop is not None:
        overrides.append(f"eval.crop_size=[{args.crop[0]},{args.crop[1]}]")
    if args.stride is not None:
        overrides.append(f"eval.stride=[{args.stride[0]},{args.stride[1]}]")
    if args.flip:
        overrides.append("eval.flip=true")
    if args.scales is not None:
        overrides.append("eval.scales=[" + ",".join(repr(scale) for scale in args.scales) + "]")
    if args.amp is not None:
        overrides.append(f"runtime.amp='{args.amp}'")
    return overrides


def load_model(
    cfg: Config, checkpoint_path: str | os.PathLike, device: torch.device
) -> tuple[nn.Module, str]:
    """The config's model with the checkpoint's weights, in eval mode on `device`.

    Returns the model and which weights were loaded ("ema", "model" or "state_dict"; see
    `segls.train.checkpoint.load_weights`). No pretrained encoder file is read: the checkpoint
    holds every weight.
    """
    model_cfg = dataclasses.replace(cfg.model, encoder_weights=None)
    model = build_model(model_cfg, cfg.data.in_channels, cfg.data.num_classes, cfg.loss.upsample)
    source = checkpoint.load_weights(model, checkpoint_path)
    return model.to(device).eval(), source


class InferenceSetup(NamedTuple):
    """What tools/test.py and tools/infer.py build from their arguments before predicting."""

    cfg: Config
    device: torch.device
    amp_dtype: torch.dtype | None
    settings: InferenceSettings
    model: nn.Module
    weights: str


def setup_inference(args: argparse.Namespace) -> InferenceSetup:
    """Config (with overrides and inference flags), device, amp, inference mode and model."""
    cfg = config.load(args.config, [*args.overrides, *inference_overrides(args)])
    device = runtime.configure(cfg.runtime)
    amp_dtype = runtime.amp_dtype(cfg.runtime.amp, device)
    settings = settings_from_config(cfg)
    model, weights = load_model(cfg, args.checkpoint, device)
    return InferenceSetup(cfg, device, amp_dtype, settings, model, weights)


def _rank_prefix() -> str:
    """The "[rank R] " that starts messages when torchrun runs several processes, else ""."""
    world = os.environ.get("WORLD_SIZE", "1")
    if world.isdigit() and int(world) > 1:
        return f"[rank {os.environ.get('RANK', '?')}] "
    return ""


def run_command(
    main: Callable[[list[str] | None], object],
    argv: list[str] | None = None,
    errors: tuple[type[BaseException], ...] = USER_ERRORS,
) -> int:
    """Run a command's `main(argv)` and return its exit status.

    `errors` are printed as one line (``error: ...``) with status 1; a run stopped by
    SIGTERM/SIGINT (after its checkpoint) exits with 128 + the signal number, as the shell
    reports a process killed by that signal. A `main` that returns an int returns the status.
    """
    prefix = _rank_prefix()
    try:
        result = main(argv)
    except errors as error:
        print(f"{prefix}error: {error}", file=sys.stderr)
        return 1
    except TrainingInterrupted as stop:
        print(f"{prefix}{stop}", file=sys.stderr)
        return stop.exit_code
    return result if type(result) is int else 0
