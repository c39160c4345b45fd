"""Does label smoothing help? Train a config at several ε and compare mIoU and calibration.

    python tools/compare_smoothing.py CONFIG [--eps 0 0.05 0.1 0.2] [--seeds 0]
                                      [--out DIR] [key.path=value ...]
    python tools/compare_smoothing.py --collect WORK_DIR [WORK_DIR ...] [--out DIR]

The first form trains CONFIG once per (ε, seed) into DIR/eps<ε>_seed<s>/ (default DIR:
work_dirs/smoothing_<config stem>/), reusing finished runs and resuming interrupted ones; the
second compares runs that exist already. Both print a table of the final evaluation of each
ε (mIoU, mAcc, ECE, NLL, Brier; mean ± standard deviation over seeds) and write
summary.md, summary.json, smoothing.png (mIoU and ECE against ε) and TensorBoard records
into DIR. DIR and the runs' work dirs are held for the whole command (`segls.train.lock`):
another comparison, tools/train.py or --resume into them meanwhile is refused.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from segls import config
from segls.cli import common
from segls.cli.training import run_training_command, stopped


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", help="YAML config to train at each ε")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--collect", nargs="+", metavar="WORK_DIR", help="compare existing runs")
    parser.add_argument("--out", help="output directory (default: work_dirs/smoothing_<stem>)")
    argv, overrides = common.pull_overrides(argv)  # so that they may follow --eps or --seeds
    args = parser.parse_intermixed_args(argv)
    args.overrides += overrides
    if (args.config is None) == (args.collect is None):
        parser.error("give either CONFIG (to train) or --collect WORK_DIR ... (not both)")
    bad = [eps for eps in args.eps if not 0 <= eps < 1]
    if bad:
        parser.error(f"--eps values must be in [0, 1), got {bad}")
    return args


def main(argv: list[str] | None = None) -> list[dict] | int:
    """Train or collect the runs, print the table, write the report; returns the summary."""
    args = parse_args(argv)
    if args.config is not None:
        config.load(args.config, args.overrides)  # a bad config is reported before torch loads
    from segls.train import TrainingInterrupted, smoothing
    from segls.train.lock import hold_work_dir

    with contextlib.ExitStack() as held:
        if args.collect:
            out_dir = Path(args.out or "work_dirs/smoothing_collected")
            held.enter_context(hold_work_dir(out_dir))
            runs = args.collect
        else:
            out_dir = Path(args.out or Path("work_dirs") / f"smoothing_{Path(args.config).stem}")
            held.enter_context(hold_work_dir(out_dir))
            for epsilon in args.eps:
                for seed in args.seeds:
                    run_dir = out_dir / smoothing.run_dir_name(epsilon, seed)
                    held.enter_context(hold_work_dir(run_dir))
            try:
                runs = smoothing.run_grid(
                    args.config, args.eps, args.seeds, out_dir, args.overrides
                )
            except TrainingInterrupted as stop:
                return stopped(stop)
        records = smoothing.collect(runs)
        paths = smoothing.write_report(records, out_dir)
    summary = smoothing.summarise(records)
    print(smoothing.markdown_table(summary))
    print(f"wrote {paths['markdown']}, {paths['json']} and {paths['plot']}")
    return summary


def run(argv: list[str] | None = None) -> int:
    """`main`, with the errors a user can act on printed as one line; returns the exit status."""
    return run_training_command(main, argv, (FileNotFoundError,))
