"""The loss on the CPU: fwd+bwd time and peak memory above the inputs, side by side.

The variants are timed in turns in one child process (``python -m benchmarks.cli.bench_loss
--worker time``), so that load from other processes slows them alike. Each variant's memory
is measured in a child of its own (``--worker memory``), so that one variant's freed memory
cannot hide another's peak, and that child runs with `benchmarks.memory.LIVE_PEAK_ENV`, so
the figure is the peak of the live allocations above the inputs; the gradient buffer counts.
Linux with glibc only.
"""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F

from benchmarks.losses import fwd_bwd, one_hot_dense, run_child, time_in_turns
from benchmarks.memory import peak_of
from benchmarks.reference import IGNORE, make_inputs
from segls.losses import label_smooth_softmax_ce

__all__ = ["VARIANTS", "markdown", "measure_memory", "run_in_children", "time_variants"]

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


def _cross_entropy(x, y, eps):
    return F.cross_entropy(x, y, ignore_index=IGNORE, label_smoothing=eps)


def _segls_unchecked(x, y, eps):
    return label_smooth_softmax_ce(x, y, eps, check_labels=False)


@cache
def _compiled(loss_fn):
    """``loss_fn`` under torch.compile (inductor): compiled at its first call, the warm-up."""
    return torch.compile(loss_fn)


# The peer a PyTorch user compares with now, and segls compiled (its plain-ops form, one graph).
VARIANTS["compiled F.cross_entropy"] = lambda x, y, eps: _compiled(_cross_entropy)(x, y, eps)
VARIANTS["compiled segls (check_labels=False)"] = lambda x, y, eps: _compiled(_segls_unchecked)(
    x, y, eps
)


def _warm_step(name: str, shape, ignore_frac: float, eps: float):
    """One fwd+bwd of a variant on fresh inputs, run twice to warm up (and compile)."""
    logits, labels = make_inputs(tuple(shape), ignore_fraction=ignore_frac)
    step = fwd_bwd(lambda x, y: VARIANTS[name](x, y, eps), logits, labels)
    for _ in range(2):
        step()
    return step


def time_variants(names, shape, ignore_frac: float, eps: float, repeats: int) -> list[dict]:
    """Median fwd+bwd time and loss of each variant, timed in turns in this process."""
    steps = {name: _warm_step(name, shape, ignore_frac, eps) for name in names}
    return time_in_turns(steps, repeats)


def measure_memory(name: str, shape, ignore_frac: float, eps: float) -> dict:
    """Peak memory above the inputs of one fwd+bwd of one variant (the worst of 3), in MiB."""
    step = _warm_step(name, shape, ignore_frac, eps)
    peaks = [peak_of(step, torch.device("cpu")) for _ in range(3)]
    return {"name": name, "peak_mib": None if None in peaks else max(peaks)}


def run_in_children(names, shape, ignore_frac: float, eps: float, repeats: int) -> list[dict]:
    """Each variant's memory in a child of its own, then all timed in turns in one child."""
    args = ["--shape", *map(str, shape), "--ignore", str(ignore_frac), "--eps", str(eps)]
    args += ["--repeats", str(repeats)]
    peaks = {}
    for name in names:
        (result,) = run_child(
            "benchmarks.cli.bench_loss", ["--worker", "memory", *args, "--variants", name], True
        )
        peaks[name] = result["peak_mib"]
    timed = run_child(
        "benchmarks.cli.bench_loss", ["--worker", "time", *args, "--variants", *names]
    )
    return [{**r, "peak_mib": peaks[r["name"]]} for r in timed]


def _ratio(value: float | None, reference: float | None) -> str:
    return f"{value / reference:.2f}x" if value is not None and reference else "n/a"


def markdown(results: list[dict]) -> str:
    """The results as a Markdown table, speed and memory relative to F.cross_entropy."""
    ref = next((r for r in results if r["name"] == "F.cross_entropy"), results[0])
    lines = [
        "\n| variant | fwd+bwd ms | speed-up vs F.cross_entropy | peak MiB above inputs "
        "| peak vs F.cross_entropy | loss |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.1f}"
        lines.append(
            f"| {r['name']} | {r['median_ms']:.1f} | {_ratio(ref['median_ms'], r['median_ms'])} "
            f"| {peak} | {_ratio(r['peak_mib'], ref['peak_mib'])} | {r['loss']:.6f} |"
        )
    return "\n".join(lines)
