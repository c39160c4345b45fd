"""What the training commands (train, compare_smoothing) add to `common.run_command`.

Only these commands import this module, so it may name training's errors; test, infer and
export never import training (tests/test_layout.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from segls.cli.common import rank_prefix, run_command, user_errors

if TYPE_CHECKING:
    from segls.train import TrainingInterrupted

__all__ = ["run_training_command", "stopped"]


def run_training_command(
    main: Callable[[list[str] | None], object],
    argv: list[str] | None = None,
    extra_errors: tuple[type[Exception], ...] = (),
) -> int:
    """`run_command` with WorkDirError (a work dir that cannot or may not be written) and
    `extra_errors` also printed as one line."""

    def errors() -> tuple[type[Exception], ...]:
        from segls.train.workdir import WorkDirError  # no torch: a busy work dir is told at once

        return (*user_errors(), WorkDirError, *extra_errors)

    return run_command(main, argv, errors)


def stopped(stop: TrainingInterrupted) -> int:
    """Say where a run stopped by SIGTERM/SIGINT (after its checkpoint) left off; return the
    exit status 128 + the signal number, as the shell reports a process killed by it."""
    print(f"{rank_prefix()}{stop}", file=sys.stderr)
    return stop.exit_code
