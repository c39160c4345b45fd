"""Benchmark training throughput and peak memory of a config across speed switches.

    python tools/bench_train.py CONFIG [--iters 20] [--warmup 5] [--variants SPEC ...]
                                [--compile | --no-compile] [--json OUT] [key.path=value ...]

Each variant trains a fresh model on random input at the config's crop and batch size (see
benchmarks/throughput.py). A SPEC joins parts with '+': fp32|fp16|bf16, channels_last, compile,
torch|triton (loss backend), fused (loss.upsample=fused; without it outside), e.g.
bf16+channels_last+triton or fp32+fused; 'all' is every combination but fused, 'default' (the
default) a readable grid for the device. Compiled variants run on CUDA by default and on the
CPU only with --compile. Overrides apply on top of CONFIG, e.g.
data.batch_size=16 runtime.device=cpu.
"""

from __future__ import annotations

import argparse

from segls import config
from segls.cli import common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; a --variants value with '=' in it is a config override."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("--iters", type=int, default=20, help="timed iterations per variant")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    parser.add_argument("--variants", nargs="+", metavar="SPEC", help="default, all, or specs")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the torch.compile variants (default: on CUDA only)",
    )
    parser.add_argument("--json", metavar="OUT", help="also write the rows to this JSON file")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.batch_size=4")
    args = parser.parse_intermixed_args(argv)
    if args.variants:
        args.overrides += [spec for spec in args.variants if "=" in spec]
        args.variants = [spec for spec in args.variants if "=" not in spec]
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    """Load the config, benchmark the variants, print the report; returns the rows."""
    args = parse_args(argv)
    cfg = config.load(args.config, args.overrides)
    from benchmarks import report, throughput
    from segls import runtime

    device = runtime.resolve_device(cfg.runtime.device)
    variants = throughput.resolve_variants(args.variants, device)
    rows = throughput.benchmark(cfg, variants, args.iters, args.warmup, args.compile)
    env = report.environment(cfg, args.config, device, args.iters, args.warmup)
    print(report.format_report(env, rows), end="")
    if args.json:
        report.write_json(args.json, env, rows)
    return rows


def run(argv: list[str] | None = None) -> int:
    """`main`, with the errors a user can act on printed as one line; returns the exit status."""
    return common.run_command(main, argv, lambda: (ValueError,))
