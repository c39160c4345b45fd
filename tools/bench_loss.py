"""Benchmark the loss on the CPU: fwd+bwd time and peak memory above the inputs, side by side.

    python tools/bench_loss.py [--shape 4 19 256 512] [--ignore 0.05] [--repeats 15]

Each variant runs in its own child process so that one variant's freed memory cannot hide
another's peak. Peak memory is the rise of the process's peak resident set (VmHWM, reset
through /proc/self/clear_refs) over the resident set once the inputs exist; the gradient
buffer counts. Linux only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from segls.losses import label_smooth_softmax_ce

IGNORE = 255


def one_hot_dense(logits, labels, eps):
    """The dense formulation: an explicit smoothed one-hot target times log_softmax."""
    num_classes = logits.shape[1]
    ignored = labels == IGNORE
    safe = labels.masked_fill(ignored, 0)
    target = torch.full_like(logits, eps / num_classes)
    target.scatter_(1, safe.unsqueeze(1), 1.0 - eps + eps / num_classes)
    per_pixel = -(torch.log_softmax(logits, 1) * target).sum(1)
    per_pixel = per_pixel.masked_fill(ignored, 0.0)
    return per_pixel.sum() / (~ignored).sum()


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


def _memory_kib() -> tuple[int, int]:
    """(current, peak) resident set of this process in KiB."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def make_inputs(shape, ignore_frac, seed=0):
    """Random float32 logits and int64 labels with a fraction of ignored pixels."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=gen) * 3
    labels = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=gen)
    labels[torch.rand(labels.shape, generator=gen) < ignore_frac] = IGNORE
    return logits, labels


def run_worker(name: str, shape, ignore_frac: float, eps: float, repeats: int) -> dict:
    """Time and measure one variant in this process; returns a JSON-able dict."""
    fn = VARIANTS[name]
    logits, labels = make_inputs(shape, ignore_frac)
    logits.requires_grad_()

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
        _reset_peak()
        base, _ = _memory_kib()
        step()
        _, peak = _memory_kib()
        peaks.append(peak - base)
        logits.grad = None
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
    return {
        "name": name,
        "median_ms": statistics.median(times) * 1e3,
        "peak_mib": max(peaks) / 1024,
        "loss": loss.item(),
        "grad_sum_abs": logits.grad.abs().sum().item(),
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[4, 19, 256, 512])
    parser.add_argument("--ignore", type=float, default=0.05, help="fraction of ignored pixels")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = run_worker(args.worker, args.shape, args.ignore, args.eps, args.repeats)
        print(json.dumps(result))
        return [result]

    logits_mib = torch.Size(args.shape).numel() * 4 / 2**20
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, logits "
        f"{'x'.join(map(str, args.shape))} float32 ({logits_mib:.1f} MiB), eps {args.eps}, "
        f"{args.ignore:.0%} ignored, median of {args.repeats}"
    )
    results = []
    for name in args.variants:
        cmd = [sys.executable, __file__, "--worker", name, "--shape", *map(str, args.shape)]
        cmd += [
            "--ignore",
            str(args.ignore),
            "--eps",
            str(args.eps),
            "--repeats",
            str(args.repeats),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    ref = next((r for r in results if r["name"] == "F.cross_entropy"), results[0])
    print(
        "\n| variant | fwd+bwd ms | speed-up vs F.cross_entropy | peak MiB above inputs "
        "| peak vs F.cross_entropy | loss |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['name']} | {r['median_ms']:.1f} | {ref['median_ms'] / r['median_ms']:.2f}x "
            f"| {r['peak_mib']:.1f} | {r['peak_mib'] / ref['peak_mib']:.2f}x | {r['loss']:.6f} |"
        )
    return results


if __name__ == "__main__":
    main()
