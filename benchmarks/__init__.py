"""Code that measures segls, behind tools/bench_*.py, tools/gpu_check.py and
tools/check_tensorboard.py. It sits beside segls/ and is not installed: users never import it.

`throughput` times training steps per speed switch; `loss_cpu` and `loss_gpu` time the loss
against PyTorch's formulations, and `upsample` the loss with bilinear upsampling fused in
against interpolating first, and `segformer` the peak memory of Segformer's own loss against it (`losses`: what they share: the one-hot dense variant, steps
timed in turns, child processes); `reference` is the float64 dense loss, the random inputs
and the tolerances that the tests and the GPU check compare the loss against; `memory`
measures peaks, `report` writes the throughput table, `startup` times how fast a command reports a bad config, and
`tensorboard_view` checks in headless Chromium what TensorBoard shows of runs. `syncs`
counts a training run's host syncs per iteration, and `gpu_check` is everything a first
CUDA device must show, and `devsuite` makes the development suite of datasets that planning
rules are checked on. `cli` holds the command lines the tools run.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REPO_ROOT", "child_env"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus `extra`, with the repository first on PYTHONPATH.

    A child ``python -m benchmarks...`` finds benchmarks/ (not installed) from any directory.
    """
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **(extra or {}), "PYTHONPATH": path}
