"""Train a segmentation model from a YAML config.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--overwrite]
        [key.path=value ...]
    torchrun --nproc_per_node=K tools/train.py CONFIG ...   (K processes, one per GPU)

Overrides such as ``schedule.max_iters=2000`` are applied on top of CONFIG. The run writes
to work_dirs/<name>/ unless --work-dir says otherwise, where <name> is the config's ``name``
or, when that is empty, CONFIG's file stem (and is written into the work dir's config.yaml,
so ``tools/train.py work_dirs/<name>/config.yaml`` keeps it); --resume alone continues from
that directory's latest.pth (or, if that is missing or damaged, from the newest intact
checkpoint there). A fresh run into a directory holding another run's checkpoints, metrics
or TensorBoard events is refused unless --overwrite, which deletes them. SIGTERM or Ctrl-C
writes latest.pth before the run exits. A run holds its work dir from start to end
(`segls.train.lock`): a second run or a --resume into it meanwhile is refused at once,
naming the process that holds it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from segls import config
from segls.cli.training import run_training_command, stopped


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; a --resume value that looks like key=value is an override."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="YAML config file")
    parser.add_argument(
        "--work-dir",
        help="output directory (default: work_dirs/<name>, name: the config's or its file stem)",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CKPT",
        help="continue a run: from CKPT, or from the work dir's latest.pth when no path is given",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in a work dir holding another run, deleting its records",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. optimizer.lr=0.01")
    args = parser.parse_intermixed_args(argv)
    if isinstance(args.resume, str) and "=" in args.resume and not os.path.exists(args.resume):
        args.overrides.insert(0, args.resume)
        args.resume = True
    return args


def main(argv: list[str] | None = None) -> dict | int:
    """Load the config with overrides, train, and return the final validation scores."""
    args = parse_args(argv)
    cfg = config.load(args.config, args.overrides)
    cfg.name = cfg.name or Path(args.config).stem
    work_dir = Path(args.work_dir or Path("work_dirs") / cfg.name)
    from segls.train.lock import hold_work_dir

    with hold_work_dir(work_dir):
        # the training stack, once the config has passed its checks
        from segls.train import TrainingInterrupted, train

        try:
            return train(cfg, work_dir, resume=args.resume, overwrite=args.overwrite)
        except TrainingInterrupted as stop:
            return stopped(stop)


def run(argv: list[str] | None = None) -> int:
    """`main`, with the errors a user can act on printed as one line; returns the exit status."""
    return run_training_command(main, argv)
