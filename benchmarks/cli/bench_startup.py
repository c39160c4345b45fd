"""Time how fast a command reports a bad config, each run in a fresh Python process.

    python tools/bench_startup.py [CONFIG] [--repeats 5]

Runs ``python tools/train.py CONFIG bad.key=1`` (which must exit with status 1 and a
one-line error), ``python -c 'import torch'`` and ``python -c pass`` from the repository
root, interleaved, and prints the median, fastest and slowest wall time of each with the
machine's load average (see `benchmarks.startup`).
"""

from __future__ import annotations

import argparse
import os

from benchmarks import startup
from segls.cli import common

DEFAULT_CONFIG = "configs/unet_resnet18_scratch_64x64_600.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default=DEFAULT_CONFIG, help="a config file")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Time the commands and print the table; status 1 if the bad key was not reported."""
    args = parse_args(argv)
    load_before = os.getloadavg()
    rows = startup.time_commands(args.config, args.repeats)
    print(startup.format_report(rows, args.repeats, load_before), end="")
    train_row = rows[0]
    print(f"tools/train.py said: {train_row['stderr']}")
    return 0 if train_row["exit_status"] == [1] else 1


def run(argv: list[str] | None = None) -> int:
    """`main`, with the errors a user can act on printed as one line; returns the exit status."""
    return common.run_command(main, argv)
