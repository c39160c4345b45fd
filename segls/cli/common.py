"""What the command lines share: overrides, inference flags, errors.

The inference flags (``--mode slide --crop 512 512 --flip --amp bf16`` ...) are only a
shorter way to write ``eval.*`` and ``runtime.amp`` overrides: `inference_overrides` turns
them into ``key.path=value`` strings that go through `segls.config.load` like any other,
so the config stays the one source of truth and its checks apply to the flags too.

Nothing here imports torch: a command loads and checks its config first and imports the
training or inference stack after, so a mistyped key is reported in a fraction of a second
(tests/test_cli_startup.py). The model for inference is `segls.cli.inference`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable

from segls import NonFiniteError, config
from segls.config import Config, ConfigError
from segls.models.names import MODES
from segls.runtime.names import AMP_MODES

__all__ = [
    "add_inference_arguments",
    "inference_overrides",
    "load_config",
    "pull_overrides",
    "rank_prefix",
    "run_command",
    "user_errors",
]

Errors = Callable[[], tuple[type[Exception], ...]]

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
    group.add_argument("--amp", choices=AMP_MODES, help="runtime.amp")


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


def load_config(args: argparse.Namespace) -> Config:
    """CONFIG with the overrides and the inference flags of a command line, checked."""
    return config.load(args.config, [*args.overrides, *inference_overrides(args)])


def user_errors() -> tuple[type[Exception], ...]:
    """ConfigError, CheckpointError, DataError and NonFiniteError: their messages say what to change.

    Looked up only while an error is handled: the middle two live beside torch, which a
    command has imported by the time it can raise them.
    """
    from segls.data import DataError
    from segls.models.checkpoint import CheckpointError

    return ConfigError, CheckpointError, DataError, NonFiniteError


def rank_prefix() -> str:
    """The "[rank R] " that starts messages when torchrun runs several processes, else ""."""
    world = os.environ.get("WORLD_SIZE", "1")
    if world.isdigit() and int(world) > 1:
        return f"[rank {os.environ.get('RANK', '?')}] "
    return ""


def run_command(
    main: Callable[[list[str] | None], object],
    argv: list[str] | None = None,
    errors: Errors = user_errors,
) -> int:
    """Run a command's `main(argv)` and return its exit status.

    ConfigError and the errors `errors()` names are printed as one line (``error: ...``)
    with status 1; `errors` is called only when something was raised, so that a bad config
    is reported before torch is imported. A `main` that returns an int returns the status
    (a training run stopped by a signal: `segls.cli.training.stopped`).
    """
    prefix = rank_prefix()
    try:
        result = main(argv)
    except ConfigError as error:
        print(f"{prefix}error: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        if not isinstance(error, errors()):
            raise
        print(f"{prefix}error: {error}", file=sys.stderr)
        return 1
    return result if type(result) is int else 0
