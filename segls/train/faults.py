"""What training does when something goes wrong: non-finite steps, stop signals, memory.

- A step whose loss or gradients hold inf/NaN is skipped and leaves the model as it was,
  BatchNorm statistics included (`nonfinite`, `snapshot_buffers`, `restore_buffers`); with
  float16 the gradient scaler skips it. `NonFiniteGuard` counts skipped steps and stops the
  run after ``optimizer.max_nonfinite_steps`` in a row with `NonFiniteError`, naming the
  iteration and the last finite loss. `check_finite_weights` keeps non-finite weights from
  ever overwriting a checkpoint.
- `StopSignals` turns SIGTERM and the first Ctrl-C (SIGINT) into a request that the training
  loop answers at the end of the iteration that sees it: it writes latest.pth, then raises
  `TrainingInterrupted`. A second Ctrl-C interrupts at once.
- `agree` is the one host sync of a training iteration: whether any rank's step was
  non-finite (`nonfinite_flag`, or with float16 the gradient scaler's own overflow check,
  `overflow_flag`) and whether any rank was asked to stop travel in one small tensor,
  reduced with one collective under DDP and read once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from segls import NonFiniteError
from segls.runtime import distributed

__all__ = [
    "NonFiniteError",
    "NonFiniteGuard",
    "StopSignals",
    "TrainingInterrupted",
    "agree",
    "check_finite_weights",
    "interrupt",
    "nonfinite_flag",
    "overflow_flag",
    "restore_buffers",
    "snapshot_buffers",
]

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(Exception):
    """Training stopped on SIGTERM/SIGINT after writing a checkpoint; exit with `exit_code`."""

    def __init__(self, signum: int, iteration: int, saved: str | None) -> None:
        self.signum = signum
        self.iteration = iteration
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        where = f"saved {saved}; continue with --resume" if saved else "nothing saved"
        super().__init__(f"stopped by {name} after iter {iteration}: {where}")


def nonfinite_flag(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, grad_norm: torch.Tensor | None = None
) -> torch.Tensor:
    """Whether the loss or any gradient holds inf/NaN, as a boolean tensor (no host sync).

    `grad_norm` (the total norm, e.g. from clipping) is used when given; it is non-finite
    exactly when a gradient is (or when the norm itself overflows, which is as bad).
    """
    if grad_norm is None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        grad_norm = _total_norm([grad.detach() for grad in grads if grad is not None])
    return ~(torch.isfinite(loss.detach()) & torch.isfinite(grad_norm.to(loss.device)))


def overflow_flag(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """Whether `scaler.unscale_(optimizer)` found inf/NaN gradients, as a tensor (no host sync).

    This is the flag `GradScaler.step` would read (one sync of its own) and `update` lowers
    the scale by; torch keeps it per device in ``GradScaler._found_inf_per_device``.
    """
    found = list(scaler._found_inf_per_device(optimizer).values())
    device = found[0].device
    return torch.stack([flag.to(device, non_blocking=True) for flag in found]).sum() > 0


def agree(bad: torch.Tensor, signum: int) -> tuple[bool, int]:
    """(whether `bad` is true on any rank, the stop signal any rank received or 0): one sync.

    `bad` is a one-element flag on the training device and `signum` this process's pending
    stop signal (`StopSignals.requested`); both travel in one tensor, reduced with one
    collective under DDP and read once.
    """
    pending = torch.full((), signum, dtype=torch.int64, device=bad.device)
    flags = torch.stack([bad.reshape(()).to(torch.int64), pending])
    skipped, stop = distributed.all_reduce_max(flags).tolist()
    return bool(skipped), int(stop)


def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all `grads` together (torch's get_total_norm where it exists, torch>=2.6)."""
    if not grads:
        return torch.zeros(())
    if hasattr(torch.nn.utils, "get_total_norm"):
        return torch.nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def snapshot_buffers(model: nn.Module) -> list[torch.Tensor]:
    """Copies of `model`'s buffers (BatchNorm statistics), which a forward pass changes."""
    return [buffer.detach().clone() for buffer in model.buffers()]


def restore_buffers(model: nn.Module, snapshot: list[torch.Tensor]) -> None:
    """Put back the buffers saved by `snapshot_buffers`, undoing a skipped step's forward."""
    with torch.no_grad():
        for buffer, saved in zip(model.buffers(), snapshot, strict=True):
            buffer.copy_(saved)


def check_finite_weights(model: nn.Module, iteration: int) -> None:
    """Raise NonFiniteError if a weight or buffer of `model` holds inf/NaN (before a save)."""
    tensors = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    if not tensors:
        return
    finite = torch.stack([torch.isfinite(v).all() for v in tensors.values()]).tolist()
    bad = [name for name, ok in zip(tensors, finite, strict=True) if not ok]
    if bad:
        shown = ", ".join(bad[:5]) + (f", ... ({len(bad)} in all)" if len(bad) > 5 else "")
        raise NonFiniteError(
            f"at iter {iteration} the weights hold inf/NaN ({shown}); training stopped without "
            "writing them, so the checkpoints on disk keep the last finite weights. Lower "
            "optimizer.lr or set optimizer.grad_clip, then resume from the last checkpoint"
        )


class NonFiniteGuard:
    """Counts skipped (non-finite) steps and stops training after `limit` in a row.

    The last finite loss stays on the device (no host sync) until a message needs it.
    Skipped steps are passed to `log` (e.g. `RunLogger.info`); the reason to stop is the
    NonFiniteError's message, printed once by whoever catches it.
    """

    def __init__(self, limit: int, log: Callable[[str], None] = print) -> None:
        self.limit = limit
        self.log = log
        self.in_a_row = 0
        self.total = 0
        self._last_loss: torch.Tensor | None = None
        self._last_iter: torch.Tensor | None = None
        self._images: list[str] = []  # images with NaN/inf pixels in this streak's batches

    def update(
        self, iteration: int, loss: torch.Tensor, skipped: bool, images: Sequence[str] = ()
    ) -> None:
        """Record one step; log a skipped one; raise NonFiniteError at `limit` in a row.

        `images`: the files of a skipped step's batch whose pixels hold NaN/inf, if known.
        """
        loss = loss.detach().float()
        finite = torch.isfinite(loss)
        if self._last_loss is None:
            self._last_loss = torch.full_like(loss, float("nan"))
            self._last_iter = torch.zeros((), dtype=torch.int64, device=loss.device)
        step = torch.full_like(self._last_iter, iteration)  # made on the device: no copy
        self._last_loss = torch.where(finite, loss, self._last_loss)
        self._last_iter = torch.where(finite, step, self._last_iter)
        if not skipped:
            self.in_a_row = 0
            self._images = []
            return
        self.in_a_row += 1
        self.total += 1
        self._images += [name for name in images if name not in self._images]
        if self.in_a_row >= self.limit:
            raise NonFiniteError(self._stop_message(iteration))
        pixels = f"; NaN/inf pixels in {', '.join(images)}" if images else ""
        self.log(
            f"iter {iteration}: non-finite loss or gradients, step skipped "
            f"({self.in_a_row} in a row, {self.total} in all; the run stops at {self.limit} "
            f"in a row, optimizer.max_nonfinite_steps){pixels}"
        )

    def _stop_message(self, iteration: int) -> str:
        """Why training stops: where, the last finite loss, and what to try."""
        last_iter = int(self._last_iter)
        if last_iter > 0:
            last = f"the last finite loss was {float(self._last_loss):.6g} at iter {last_iter}"
        else:
            last = "no step of this run had a finite loss"
        if self._images:
            last += f"; the skipped batches held NaN/inf pixels in {', '.join(self._images)}"
        return (
            f"training stopped at iter {iteration}: {self.in_a_row} steps in a row had a "
            f"non-finite loss or gradients and were skipped (optimizer.max_nonfinite_steps="
            f"{self.limit}); {last}. No checkpoint was written from a non-finite step, so "
            "latest.pth/best.pth hold the last good weights. Lower optimizer.lr, set "
            "optimizer.grad_clip, use runtime.amp=bf16 or off, or look for bad images/labels"
        )


class StopSignals:
    """Context manager: SIGTERM and the first SIGINT ask training to stop after this iteration.

    `requested` tells the loop, which agrees it with the other ranks (`agree`), so that they
    all stop after the same iteration. The previous handlers come back on exit. Outside the
    main thread no handler can be set, and the signals keep their usual effect.
    """

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        """Remember the signal; a second SIGINT raises KeyboardInterrupt at once."""
        if signum == signal.SIGINT and self.signum:
            raise KeyboardInterrupt
        self.signum = signum

    def install(self) -> None:
        """Catch the signals from now on (only possible in the main thread)."""
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        """Give the signals back to the handlers they had before `install`."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> StopSignals:
        self.install()
        return self

    def __exit__(self, *exc_info) -> None:
        self.uninstall()

    def requested(self) -> int:
        """The signal that asked this process to stop, or 0 (`agree` tells the other ranks)."""
        return self.signum


def interrupt(signum: int, iteration: int, saved: Path) -> TrainingInterrupted:
    """The error that ends a run stopped by `signum` after `iteration`, `saved` written.

    Every rank waits here until rank 0 has written `saved`, so no rank exits (and makes
    torchrun stop the others) while rank 0 is still saving. The message is printed once,
    by whoever catches the error (the command line), and written to train.log by the loop.
    """
    distributed.barrier()
    return TrainingInterrupted(signum, iteration, str(saved))


# What to lower when a training step cannot allocate its tensors (an evaluation:
# segls.runtime.EVAL_MEMORY).
TRAIN_MEMORY = "data.batch_size, data.crop_size or the high end of data.scale_range"
