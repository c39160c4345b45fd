"""Everything a first CUDA device must show, in one call of at most 7 minutes.

    python tools/gpu_check.py --out DIR [--smoke] [--sections NAME ...] [--time-limit 420]

Writes DIR/gpu_report.md and DIR/gpu_report.json (rewritten after every section, so a run
cut short still leaves a report): kernel correctness at real sizes, the loss benchmark and
its targets, training throughput, the default recipe on CUDA, and host syncs per training
step (see benchmarks/gpu_check). Without CUDA, or with --smoke, every section runs with
tiny shapes and the rows that need a GPU are marked skipped. Training runs and checkpoints
go to a temporary folder (--work-dir to keep them). Exit status 0 when every section that
ran passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.gpu_check import SECTIONS, TOTAL_BUDGET_S, harness, report
from segls import io

MIN_SECTION_S = 5.0  # a section is not started with less time than this left


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    names = [section.name for section in SECTIONS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for gpu_report.md/.json")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes even with CUDA")
    parser.add_argument("--sections", nargs="+", choices=names, default=names, metavar="NAME")
    parser.add_argument(
        "--time-limit", type=float, default=TOTAL_BUDGET_S, help="seconds for the whole check"
    )
    parser.add_argument("--work-dir", help="keep training runs here (default: a temporary dir)")
    return parser.parse_args(argv)


def _run_sections(args: argparse.Namespace, device: torch.device, work_dir: Path) -> list[dict]:
    """Each chosen section in turn, within the time limit; the report rewritten after each."""
    start = time.monotonic()
    smoke = args.smoke or device.type != "cuda"
    env = report.environment(device, smoke)
    print(f"GPU check on {env['device']} ({env['mode']}); report in {args.out}", flush=True)
    records = []
    for section in (s for s in SECTIONS if s.name in args.sections):
        left = args.time_limit - (time.monotonic() - start) - harness.GRACE_S
        seconds = min(section.budget_s, left)
        if seconds < MIN_SECTION_S and not section.missing:
            record = {"name": section.name, "title": section.title, "seconds": 0.0}
            record |= {"budget_s": 0.0, "budget_reason": section.budget_reason}
            record |= {"skipped": "the script's time limit was reached"}
            record["status"] = harness.status_of(record)
        else:
            record = harness.run_section(section, device, smoke, work_dir, seconds)
        records.append(record)
        report.write(Path(args.out), env, records, time.monotonic() - start)
        print(f"{record['title']}: {record['status']} ({record['seconds']:.1f} s)", flush=True)
    return records


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections; exit status 0 when every one that ran passed."""
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with io.scratch_directory(args.work_dir, "segls_gpu_check_") as work_dir:
        records = _run_sections(args, device, work_dir)
    passed = all(r["status"] == "ok" or r["status"].startswith("skipped") for r in records)
    return 0 if passed else 1


def run(argv: list[str] | None = None) -> int:
    """`main`; returns the exit status."""
    return main(argv)
