"""What the loss benchmarks share: the dense formulation segls replaces, and fwd+bwd steps
timed in turns in a child process (their inputs come from `benchmarks.reference`)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from benchmarks import child_env
from benchmarks.memory import LIVE_PEAK_ENV
from benchmarks.reference import dense_loss, smoothed

__all__ = ["fwd_bwd", "one_hot_dense", "run_child", "time_in_turns"]


def one_hot_dense(logits: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """The dense formulation segls replaces: `reference.dense_loss` with ε's targets, an
    explicit smoothed one-hot target times log_softmax, in the logits' dtype."""
    return dense_loss(logits, labels, *smoothed(eps, logits.shape[1]))


def fwd_bwd(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    logits: torch.Tensor,
    labels: torch.Tensor,
) -> Callable[[], torch.Tensor]:
    """One step: the loss of (logits, labels) and its backward, the device synchronised.

    The gradient is dropped at the end, so that only the inputs are live between steps.
    """
    logits.requires_grad_()

    def step() -> torch.Tensor:
        loss = loss_fn(logits, labels)
        loss.backward()
        if logits.is_cuda:
            torch.cuda.synchronize(logits.device)
        logits.grad = None
        return loss.detach()

    return step


def time_in_turns(steps: dict[str, Callable[[], torch.Tensor]], repeats: int) -> list[dict]:
    """Median and fastest milliseconds and the loss of each step, run in turns `repeats` times.

    In turns, load from other processes slows every step alike, so ratios stay meaningful on
    a busy machine.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    losses = {}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            losses[name] = step()
            times[name].append((time.perf_counter() - start) * 1e3)
    return [
        {
            "name": name,
            "median_ms": statistics.median(times[name]),
            "min_ms": min(times[name]),
            "loss": losses[name].item(),
        }
        for name in steps
    ]


def run_child(module: str, args: list[str], live_peak: bool = False) -> list | dict:
    """Run ``python -m module args`` and return the JSON its last output line holds.

    ``live_peak`` starts it with `benchmarks.memory.LIVE_PEAK_ENV`. A failed child raises a
    RuntimeError with the last line of its error output.
    """
    env = child_env(LIVE_PEAK_ENV if live_peak else None)
    command = [sys.executable, "-m", module, *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no error output"])[-1]
        raise RuntimeError(f"{module} {' '.join(args[:3])} failed: {last}")
    return json.loads(result.stdout.strip().splitlines()[-1])
