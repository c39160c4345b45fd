"""Benchmark the loss on the CPU: fwd+bwd time and peak memory above the inputs, side by side.

    python tools/bench_loss.py [--shape 4 19 256 512] [--ignore 0.05] [--repeats 15]

The variants are timed in turns in one child process; each one's memory is measured in a
child of its own, as the peak of the live allocations above the inputs (the gradient buffer
counts). Linux with glibc only. The harness is `benchmarks.loss_cpu`.
"""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks import loss_cpu


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the variants in child processes (or, with --worker, be one of them); print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[4, 19, 256, 512])
    parser.add_argument("--ignore", type=float, default=0.05, help="fraction of ignored pixels")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=15)
    variants = list(loss_cpu.VARIANTS)
    parser.add_argument("--variants", nargs="+", default=variants, choices=variants)
    parser.add_argument("--worker", choices=["time", "memory"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        results = _work(args)
        print(json.dumps(results))
        return results
    logits_mib = torch.Size(args.shape).numel() * 4 / 2**20
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, logits "
        f"{'x'.join(map(str, args.shape))} float32 ({logits_mib:.1f} MiB), eps {args.eps}, "
        f"{args.ignore:.0%} ignored, median of {args.repeats}"
    )
    results = loss_cpu.run_in_children(
        args.variants, args.shape, args.ignore, args.eps, args.repeats
    )
    print(loss_cpu.markdown(results))
    return results


def _work(args: argparse.Namespace) -> list[dict]:
    if args.worker == "time":
        return loss_cpu.time_variants(
            args.variants, args.shape, args.ignore, args.eps, args.repeats
        )
    return [
        loss_cpu.measure_memory(name, args.shape, args.ignore, args.eps) for name in args.variants
    ]


def run(argv: list[str] | None = None) -> int:
    """`main`; returns the exit status."""
    main(argv)
    return 0


if __name__ == "__main__":  # the child processes of benchmarks.loss_cpu.run_in_children
    main()
