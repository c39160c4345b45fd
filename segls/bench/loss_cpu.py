"""The loss on the CPU: fwd+bwd time and peak memory above the inputs, one child per variant.

Each variant runs in its own child process (``python -m segls.cli.bench_loss --worker``) so
that one variant's freed memory cannot hide another's peak. Peak memory is the rise of the
process's peak resident set over the resident set once the inputs exist
(`segls.bench.memory`); the gradient buffer counts. Linux only.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from segls.bench.losses import IGNORE, make_inputs, one_hot_dense
from segls.bench.memory import peak_mib, reset_peak
from segls.losses import label_smooth_softmax_ce

__all__ = ["VARIANTS", "markdown", "run_in_children", "run_worker"]

VARIANTS = {
    "segls": lambda x, y, eps: label_smooth_softmax_ce(x, y, eps),
    "segls (check_labels=False)": lambda x, y, eps: label_smooth_softmax_ce(
        x, y, eps, check_labels=False
    ),
    "F.cross_entropy": lambda x, y, eps: F.cross_entropy(
        x, y, ignore_index=IGNORE, label_smoothing=eps
    ),
    "one-hot dense": one_hot_dense,
}


def run_worker(name: str, shape, ignore_frac: float, eps: float, repeats: int) -> dict:
    """Time and measure one variant in this process; returns a JSON-able dict."""
    fn = VARIANTS[name]
    logits, labels = make_inputs(tuple(shape), ignore_frac)
    logits.requires_grad_()
    cpu = torch.device("cpu")

    def step():
        logits.grad = None
        loss = fn(logits, labels, eps)
        loss.backward()
        return loss

    for _ in range(2):
        step()
    logits.grad = None
    peaks = []
    for _ in range(3):
        start = reset_peak(cpu)
        step()
        peaks.append(peak_mib(cpu, start))
        logits.grad = None
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
    return {
        "name": name,
        "median_ms": statistics.median(times) * 1e3,
        "peak_mib": max(peaks),
        "loss": loss.item(),
        "grad_sum_abs": logits.grad.abs().sum().item(),
    }


def run_in_children(names, shape, ignore_frac: float, eps: float, repeats: int) -> list[dict]:
    """`run_worker` for each variant in `names`, each in a fresh child process."""
    results = []
    for name in names:
        cmd = [sys.executable, "-m", "segls.cli.bench_loss", "--worker", name]
        cmd += ["--shape", *map(str, shape), "--ignore", str(ignore_frac), "--eps", str(eps)]
        cmd += ["--repeats", str(repeats)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def markdown(results: list[dict]) -> str:
    """The results as a Markdown table, speed and memory relative to F.cross_entropy."""
    ref = next((r for r in results if r["name"] == "F.cross_entropy"), results[0])
    lines = [
        "\n| variant | fwd+bwd ms | speed-up vs F.cross_entropy | peak MiB above inputs "
        "| peak vs F.cross_entropy | loss |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['median_ms']:.1f} | {ref['median_ms'] / r['median_ms']:.2f}x "
            f"| {r['peak_mib']:.1f} | {r['peak_mib'] / ref['peak_mib']:.2f}x | {r['loss']:.6f} |"
        )
    return "\n".join(lines)
