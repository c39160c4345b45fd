"""The loss with bilinear upsampling fused in, against interpolating first: time and memory.

A variant takes low-resolution float32 logits (N, C, h, w) and int64 labels (N, H, W) with
5 % ignored pixels, and runs loss + backward to the logits:

- ``fused``: ``label_smooth_softmax_ce(..., upsample='bilinear')`` (torch backend on the CPU,
  Triton on CUDA);
- ``interpolate + F.cross_entropy``: ``F.interpolate`` to (H, W), then PyTorch's loss;
- ``interpolate + segls``: ``F.interpolate``, then ``label_smooth_softmax_ce``.

The variants of a case are timed in turns in one child process (``python -m
benchmarks.cli.bench_upsample --worker``), so that load from other processes slows them alike.
Each variant's peak memory above the inputs (the low-resolution gradient counts) is measured
in a child of its own, so that one variant's freed memory cannot hide another's peak: on the
CPU the peak of the live allocations (`benchmarks.memory`), on CUDA ``max_memory_allocated``
above what was allocated before the step.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from benchmarks.losses import fwd_bwd, run_child, time_in_turns
from benchmarks.memory import peak_of
from benchmarks.reference import IGNORE, make_inputs
from segls.losses import label_smooth_softmax_ce

__all__ = ["PRESETS", "REFERENCE", "VARIANTS", "benchmark", "format_table", "run_worker"]

EPS = 0.1
PRESETS = {  # name -> (logits shape, full-resolution size)
    "x4": ((8, 19, 128, 256), (512, 1024)),
    "x8": ((16, 150, 64, 64), (512, 512)),
}
REFERENCE = "interpolate + F.cross_entropy"


def _interpolate(logits: torch.Tensor, size, align_corners: bool) -> torch.Tensor:
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=align_corners)


VARIANTS = {
    "fused": lambda x, y, ac: label_smooth_softmax_ce(
        x, y, EPS, upsample="bilinear", align_corners=ac
    ),
    REFERENCE: lambda x, y, ac: F.cross_entropy(
        _interpolate(x, y.shape[-2:], ac), y, ignore_index=IGNORE, label_smoothing=EPS
    ),
    "interpolate + segls": lambda x, y, ac: label_smooth_softmax_ce(
        _interpolate(x, y.shape[-2:], ac), y, EPS
    ),
}


def _warm_step(name: str, spec: dict, device: torch.device):
    """One fwd+bwd of a variant on fresh inputs, run once to warm up (kernels, taps, allocator)."""
    logits, labels = _inputs(spec, device)
    align_corners = spec["align_corners"]
    step = fwd_bwd(lambda x, y: VARIANTS[name](x, y, align_corners), logits, labels)
    step()
    return step


def _inputs(spec: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    shape, size = tuple(spec["shape"]), tuple(spec["size"])
    return make_inputs(shape, device=device, ignore_fraction=0.05, label_size=size)


def _fused_name(spec: dict, device: torch.device) -> str:
    """``fused`` with the backend its autograd Function says it took."""
    logits, labels = _inputs(spec, device)
    loss = VARIANTS["fused"](logits.requires_grad_(), labels, spec["align_corners"])
    return f"fused ({'triton' if 'Triton' in type(loss.grad_fn).__name__ else 'torch'} backend)"


def run_worker(spec: dict) -> list[dict]:
    """``spec['kind']`` 'time': all variants in turns; 'memory': the first variant's peak."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    if spec["kind"] == "memory":
        name = spec["names"][0]
        return [{"name": name, "peak_mib": peak_of(_warm_step(name, spec, device), device)}]
    steps = {name: _warm_step(name, spec, device) for name in spec["names"]}
    results = time_in_turns(steps, spec["repeats"])
    for result in results:
        fused = result["name"] == "fused"
        result["variant"] = _fused_name(spec, device) if fused else result["name"]
    return results


def run_case(names, shape, size, repeats, device, align_corners, threads=0) -> list[dict]:
    """Each variant's memory in a child of its own, then the ones that ran timed in turns."""
    spec = {"shape": list(shape), "size": list(size), "repeats": repeats, "device": device}
    spec |= {"align_corners": align_corners, "threads": threads}
    module = "benchmarks.cli.bench_upsample"
    peaks, failed = {}, []
    for name in names:
        worker = json.dumps({**spec, "kind": "memory", "names": [name]})
        try:
            (result,) = run_child(module, ["--worker", worker], live_peak=device == "cpu")
            peaks[name] = result["peak_mib"]
        except RuntimeError as error:  # out of memory, say: the table says so
            failed.append({"name": name, "variant": name, "error": str(error)})
    timed = []
    if peaks:
        worker = json.dumps({**spec, "kind": "time", "names": list(peaks)})
        timed = run_child(module, ["--worker", worker])
    for result in timed:
        result["peak_mib"] = peaks[result["name"]]
    order = {name: index for index, name in enumerate(names)}
    return sorted(timed + failed, key=lambda r: order[r["name"]])


def _ratio(value, reference, digits: int) -> str:
    return f"{value / reference:.{digits}f}x" if value is not None and reference else "-"


def format_table(shape, size, results: list[dict]) -> str:
    """A markdown table of one case's variants, ratios against interpolate + F.cross_entropy."""
    ref = next((r for r in results if r["name"] == REFERENCE and "error" not in r), None)
    lines = [
        f"logits {'×'.join(map(str, shape))} → {size[0]}×{size[1]} (×{size[0] // shape[2]})",
        "",
        "| variant | fwd+bwd ms | time vs F.cross_entropy | peak MiB above inputs "
        "| peak vs F.cross_entropy | loss |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['variant']} | failed: {r['error']} | | | | |")
            continue
        time_ratio = _ratio(r["median_ms"], ref and ref["median_ms"], 2)
        peak_ratio = _ratio(r["peak_mib"], ref and ref["peak_mib"], 3)
        peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.1f}"
        lines.append(
            f"| {r['variant']} | {r['median_ms']:.0f} | {time_ratio} | {peak} | {peak_ratio} "
            f"| {r['loss']:.6f} |"
        )
    return "\n".join(lines)


def benchmark(cases, variants, repeats, device, align_corners, threads=0) -> list[dict]:
    """Every variant of every (shape, size) case; prints a table per case."""
    print(
        f"torch {torch.__version__}, {threads or torch.get_num_threads()} threads, "
        f"device {device}, float32 logits, eps {EPS}, 5% ignored, "
        f"align_corners={align_corners}, median of {repeats} after 1 warm-up, in turns"
    )
    report = []
    for shape, size in cases:
        results = run_case(variants, shape, size, repeats, device, align_corners, threads)
        print("\n" + format_table(shape, size, results), flush=True)
        report.append({"shape": list(shape), "size": list(size), "results": results})
    return report
