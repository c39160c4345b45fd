"""Write a training config for a dataset: fingerprint it, apply the rules, time the model here.

    python tools/new_config.py DATA_ROOT [--format folder|voc|cityscapes|ade20k]
        [--out configs/NAME.yaml] [--budget-minutes M] [--device cpu|cuda]

Reads every image and mask once, writes NAME.yaml (each value with the reason it was
chosen), NAME.md (the report), NAME.classes.png, NAME.intensity.png and
NAME.fingerprint.json; without a validation split it proposes one. Exit status 1 when the
data has problems that training would stop on (the files are still written).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from segls.cli.common import run_command, user_errors
from segls.plan import PlanError, default_config_path, plan_dataset, write_plan


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", metavar="DATA_ROOT", help="the dataset folder")
    parser.add_argument(
        "--format", default="folder", choices=("folder", "voc", "cityscapes", "ade20k")
    )
    parser.add_argument("--out", help="config to write (default: configs/<name from the plan>)")
    parser.add_argument(
        "--budget-minutes", type=float, default=10.0, help="training time (default 10)"
    )
    parser.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"), help="where training runs"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Plan, write, print what was found and what to run next; returns the exit status."""
    args = parse_args(argv)
    command = shlex.join(
        ["python", "tools/new_config.py", *(sys.argv[1:] if argv is None else argv)]
    )
    plan = plan_dataset(args.root, args.format, args.budget_minutes, args.device)
    paths = write_plan(plan, args.out or default_config_path(plan), command)
    for problem in plan.fingerprint.problems:
        print(f"{'BLOCKING' if problem.blocking else 'note'} {problem.kind}: {problem.message}")
    for warning in plan.warnings:
        print(f"note: {warning}")
    for name, path in paths.items():
        print(f"wrote {path}  ({name})")
    cfg = plan.config
    print(
        f"plan: {cfg.model.arch}/{cfg.model.encoder}, crop {cfg.data.crop_size}, batch "
        f"{cfg.data.batch_size}, {cfg.schedule.max_iters} iterations, scaling {cfg.data.scaling}"
    )
    print(f"next: python tools/train.py {paths['config']}\n      tensorboard --logdir work_dirs")
    return 1 if any(problem.blocking for problem in plan.fingerprint.problems) else 0


def run(argv: list[str] | None = None) -> int:
    """`main`, with the errors a user can act on printed as one line; returns the exit status."""
    return run_command(main, argv, lambda: (*user_errors(), PlanError, OSError))
