"""Check in headless Chromium what TensorBoard shows of training runs, and screenshot it.

    python tools/check_tensorboard.py LOGDIR [--out DIR]

Starts TensorBoard on LOGDIR, a tools/compare_smoothing.py output with runs eps0_seed0 and
eps0.1_seed0 (whose HParams then line up), opens the time-series (scalars, then the sample
panels), images, custom-scalars, text and HParams dashboards, checks that each shows the
tags, panels, charts and columns a segls run writes, and saves DIR/tensorboard_<page>.png
(default DIR: docs). Exit status 1 if anything is missing.
Needs Debian's ``chromium`` and ``chromium-driver`` packages (`benchmarks.tensorboard_view`).
"""

from __future__ import annotations

import argparse
from urllib.parse import quote

from benchmarks.tensorboard_view import Dashboard, check_dashboards
from segls.cli import common
from segls.train.logger import CUSTOM_SCALARS, HPARAM_METRICS

CHARTS = tuple(title for charts in CUSTOM_SCALARS.values() for title in charts)
CLOSE_SETTINGS = 'button[aria-label="Close side pane"]'
SCALARS = ("val/mIoU", "val/loss", "train/loss", "val/ECE")
DASHBOARDS = (
    Dashboard(
        "&smoothing=0&runFilter=eps&tagFilter="
        + quote("^(val/(mIoU|loss|ECE)|train/loss)$")
        + "#timeseries",
        SCALARS,
        "tensorboard_timeseries.png",
        clicks=(CLOSE_SETTINGS,),
    ),
    Dashboard(
        "&runFilter=eps0.1&tagFilter=" + quote("val/sample") + "#timeseries",
        ("val/sample_0", "val/sample_1"),
        "tensorboard_images.png",
        clicks=(CLOSE_SETTINGS,),
    ),
    Dashboard(
        "#images&tagFilter=" + quote("val/(sample|reliability)") + "&regexInput=eps0.1",
        ("val/sample_0", "val/sample_1", "val/reliability"),
        "tensorboard_images_tab.png",
    ),
    Dashboard("#custom_scalars&_smoothingWeight=0", CHARTS, "tensorboard_custom_scalars.png"),
    Dashboard("#text&regexInput=eps0.1", ("config", "lb_smooth"), "tensorboard_text.png"),
    Dashboard(
        "#hparams",
        ("loss.lb_smooth", "runtime.seed", *HPARAM_METRICS),
        "tensorboard_hparams.png",
        size=(1920, 900),
    ),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logdir", help="a work dir, or a folder of work dirs")
    parser.add_argument("--out", default="docs", help="where the screenshots go (default: docs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Check and screenshot every dashboard; returns the exit status."""
    args = parse_args(argv)
    missing = check_dashboards(args.logdir, DASHBOARDS, args.out)
    for name, absent in missing.items():
        print(f"{args.out}/{name}: " + (f"MISSING {', '.join(absent)}" if absent else "all shown"))
    return 1 if any(missing.values()) else 0


def run(argv: list[str] | None = None) -> int:
    """`main`, with the errors a user can act on printed as one line; returns the exit status."""
    return common.run_command(main, argv, lambda: (FileNotFoundError, TimeoutError))
