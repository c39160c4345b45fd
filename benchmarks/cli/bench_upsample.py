"""Benchmark the loss with bilinear upsampling fused in against interpolating first.

    python tools/bench_upsample.py [--preset x4 x8] [--shape N C h w --size H W] [--repeats 5]
                                   [--align-corners] [--device cpu|cuda] [--threads T]
                                   [--json OUT]

fwd+bwd time and peak memory above the inputs of ``upsample='bilinear'`` (torch backend on
the CPU, Triton on CUDA), ``F.interpolate`` + ``F.cross_entropy`` and ``F.interpolate`` +
segls: timed in turns in one child process, each variant's memory in a child of its own.
Presets: x4 is 8×19×128×256 → 512×1024, x8 is 16×150×64×64 → 512×512 (both by default).
The harness is `benchmarks.upsample`.
"""

from __future__ import annotations

import argparse
import json

from benchmarks import upsample
from segls.io import write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", nargs="+", choices=list(upsample.PRESETS))
    parser.add_argument("--shape", type=int, nargs=4, metavar=("N", "C", "h", "w"))
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant")
    parser.add_argument("--align-corners", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    variants = list(upsample.VARIANTS)
    parser.add_argument("--variants", nargs="+", default=variants, choices=variants)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if (args.shape is None) != (args.size is None):
        parser.error("--shape and --size go together")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the cases in child processes (or, with --worker, be one of them); print."""
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(upsample.run_worker(json.loads(args.worker))))
        return 0
    cases = [upsample.PRESETS[name] for name in args.preset or []]
    if args.shape:
        cases.append((tuple(args.shape), tuple(args.size)))
    report = upsample.benchmark(
        cases or list(upsample.PRESETS.values()),
        args.variants,
        args.repeats,
        args.device,
        args.align_corners,
        args.threads,
    )
    if args.json:
        write_json(args.json, report)
    failed = any("error" in r for case in report for r in case["results"])
    return 1 if failed else 0


def run(argv: list[str] | None = None) -> int:
    """`main`; returns the exit status."""
    return main(argv)


if __name__ == "__main__":  # the child processes of benchmarks.upsample.run_case
    raise SystemExit(main())
