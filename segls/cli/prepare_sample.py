"""Convert the ndev-sampledata scratch assay into the bundled 3-class folder dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from segls.cli import common
from segls.config import DataConfig
from segls.data import channel_stats
from segls.data.sample import SAMPLE_ROOT, SOURCE_FILE, prepare_scratch_assay

PERCENTILES = DataConfig().percentiles


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=SAMPLE_ROOT, help="output dataset folder")
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help=f"path to {SOURCE_FILE} (default: the installed ndev-sampledata package's copy)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --root")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Prepare the sample and print what was written."""
    args = parse_args(argv)
    root = prepare_scratch_assay(args.root, source=args.source, overwrite=args.overwrite)
    files = sorted(path for path in root.rglob("*") if path.is_file())
    for path in files:
        print(f"{path}  ({path.stat().st_size / 1024:.1f} KiB)")
    total = sum(path.stat().st_size for path in files)
    print(f"wrote {len(files)} files, {total / 2**20:.2f} MiB, to {root}")
    for scaling, percentiles in (("dtype", None), ("percentile", PERCENTILES)):
        mean, std = channel_stats(root, "train", percentiles)
        print(
            f"train mean: {[round(v, 4) for v in mean]}  std: {[round(v, 4) for v in std]}  "
            f"(data.scaling={scaling})"
        )


def run(argv: list[str] | None = None) -> int:
    """`main`, with the errors a user can act on printed as one line; returns the exit status."""
    return common.run_command(main, argv, lambda: (FileNotFoundError, FileExistsError, ValueError))
