"""Benchmark the loss forward+backward on a GPU against PyTorch formulations, side by side.

    python tools/bench_loss_gpu.py [--small] [--repeats 30] [--json results.json]

Each row is a median over ``--repeats`` timed fwd+bwd runs (CUDA events, after warm-up), the
peak memory allocated above the inputs during one fwd+bwd (the logits' gradient included),
and the effective bandwidth: bytes moved (logits read + gradient written + labels read) over
the median time, also as a fraction of the device's copy bandwidth measured in the same run.
Without CUDA every GPU row is marked skipped; ``--small`` then times the torch-only variants
on CPU with tiny shapes, a smoke test of the script itself.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks import loss_gpu
from segls.io import write_json


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny shapes (a smoke test)")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per row first")
    parser.add_argument(
        "--variants", nargs="+", choices=list(loss_gpu.VARIANTS), default=list(loss_gpu.VARIANTS)
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    device_name = torch.cuda.get_device_name() if cuda else "cpu (no CUDA device)"
    print(f"device: {device_name}", flush=True)
    copy_gbs = None
    if cuda or args.small:
        copy_gbs = loss_gpu.copy_bandwidth(device, 2**30 if cuda else 2**26, max(args.repeats, 5))
    rows = []
    for shape in loss_gpu.SMALL_SHAPES if args.small else loss_gpu.SHAPES:
        for dtype_name in loss_gpu.DTYPES:
            for layout in loss_gpu.LAYOUTS:
                for name in args.variants:
                    row = loss_gpu.bench_row(
                        name,
                        shape,
                        dtype_name,
                        layout,
                        device,
                        args.repeats,
                        args.warmup,
                        args.small,
                        copy_gbs,
                    )
                    rows.append(row)
    print(loss_gpu.markdown(rows, device_name, copy_gbs))
    if args.json:
        write_json(args.json, {"device": device_name, "copy_gbs": copy_gbs, "rows": rows})
    return 0


def run(argv: list[str] | None = None) -> int:
    """`main`; returns the exit status."""
    return main(argv)
