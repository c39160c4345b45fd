"""The loss forward+backward on a GPU against PyTorch formulations, side by side.

Each row is a median over ``repeats`` timed fwd+bwd runs (CUDA events, after warm-up), the
peak memory allocated above the inputs during one fwd+bwd (the logits' gradient included),
and the effective bandwidth: bytes moved (logits read + gradient written + labels read) over
the median time, also as a fraction of the device's copy bandwidth measured in the same run.
Without CUDA every GPU row is marked skipped; ``small`` then times the torch-only variants
on CPU with tiny shapes, a smoke test of the harness itself (and the Triton ones too when
``TRITON_INTERPRET=1`` runs them in Triton's interpreter).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchmarks import losses, reference
from segls.losses import label_smooth_softmax_ce

__all__ = ["SHAPES", "SMALL_SHAPES", "VARIANTS", "bench_row", "copy_bandwidth", "markdown"]

EPS = 0.1
SHAPES = [(8, 19, 1024, 2048), (16, 150, 512, 512)]
SMALL_SHAPES = [(2, 19, 64, 128), (2, 150, 32, 32)]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
LAYOUTS = ("contiguous", "channels_last")
NO_CUDA = "skipped (no CUDA device)"


def segls_triton(logits, labels):
    return label_smooth_softmax_ce(logits, labels, EPS, backend="triton", check_labels=False)


def segls_triton_inplace(logits, labels):
    return label_smooth_softmax_ce(
        logits, labels, EPS, backend="triton", check_labels=False, inplace=True
    )


def segls_torch(logits, labels):
    return label_smooth_softmax_ce(logits, labels, EPS, backend="torch", check_labels=False)


def cross_entropy(logits, labels):
    return F.cross_entropy(logits, labels, ignore_index=reference.IGNORE, label_smoothing=EPS)


def one_hot_dense(logits, labels):
    return losses.one_hot_dense(logits, labels, EPS)


# name -> (function, needs CUDA, compiled)
VARIANTS: dict[str, tuple[Callable, bool, bool]] = {
    "segls triton": (segls_triton, True, False),
    "segls triton inplace": (segls_triton_inplace, True, False),
    "segls torch": (segls_torch, False, False),
    "F.cross_entropy": (cross_entropy, False, False),
    "F.cross_entropy compiled": (cross_entropy, True, True),
    "one-hot dense": (one_hot_dense, False, False),
}


def fwd_bwd(fn, logits, labels):
    logits.grad = None
    fn(logits, labels).backward()


def median_ms(step: Callable[[], object], repeats: int, warmup: int, cuda: bool) -> float:
    """Median milliseconds of ``step()``: CUDA events on a GPU, time.perf_counter on CPU."""
    for _ in range(warmup):
        step()
    if not cuda:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)
    events = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        events.append((start, end))
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) for start, end in events)


def peak_cuda_mib(fn, logits, labels) -> float:
    """Peak memory allocated above what is live before one fwd+bwd, in MiB."""
    logits.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fwd_bwd(fn, logits, labels)
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def copy_bandwidth(device: torch.device, nbytes: int, repeats: int) -> float:
    """Copy bandwidth in GB/s (bytes read + written) of a large tensor ``copy_``."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    milliseconds = median_ms(lambda: dst.copy_(src), repeats, 3, device.type == "cuda")
    return 2 * src.nbytes / milliseconds / 1e6


def bench_row(name, shape, dtype_name, layout, device, repeats, warmup, small, copy_gbs):
    """One result row; on failure the row records the error instead of numbers."""
    fn, needs_cuda, compiled = VARIANTS[name]
    row = {"shape": "×".join(map(str, shape)), "dtype": dtype_name, "layout": layout}
    row |= {"variant": name, "status": "ok", "ms": None, "peak_mib": None, "gbs": None}
    row["fraction"] = None
    interpreted = small and not compiled and os.environ.get("TRITON_INTERPRET") == "1"
    if device.type != "cuda" and (not small or (needs_cuda and not interpreted)):
        row["status"] = NO_CUDA
        return row
    try:
        logits, labels = reference.make_inputs(shape, DTYPES[dtype_name], device, layout=layout)
        logits.requires_grad_()
        if compiled:  # afresh for each row: no recompile limit can fall back to eager
            torch.compiler.reset()
            fn = torch.compile(fn)
        cuda = device.type == "cuda"
        step = lambda: fwd_bwd(fn, logits, labels)  # noqa: E731
        row["ms"] = median_ms(step, repeats, warmup, cuda)
        if cuda:
            row["peak_mib"] = peak_cuda_mib(fn, logits, labels)
        moved = 2 * logits.nbytes + labels.nbytes
        row["gbs"] = moved / row["ms"] / 1e6
        row["fraction"] = row["gbs"] / copy_gbs
    except Exception as error:  # a row that fails (OOM, compile error) must not stop the table
        row["status"] = f"error: {type(error).__name__}: {str(error).splitlines()[0][:80]}"
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def markdown(rows, device_name, copy_gbs):
    """The results as a Markdown table with a heading line naming the device."""

    def show(value, fmt):
        return "–" if value is None else format(value, fmt)

    lines = [
        f"Device: {device_name}; copy bandwidth {show(copy_gbs, '.1f')} GB/s",
        "",
        "| shape | dtype | layout | variant | fwd+bwd ms | peak MiB | GB/s | of copy | status |",
        "|---|---|---|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        cells = [row["shape"], row["dtype"], row["layout"], row["variant"]]
        cells += [show(row["ms"], ".3f"), show(row["peak_mib"], ".0f"), show(row["gbs"], ".1f")]
        cells += [show(row["fraction"], ".0%"), row["status"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
