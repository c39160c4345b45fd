"""Make the development suite's datasets under one folder and say what each holds."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.devsuite.real import REAL
from benchmarks.devsuite.suite import BUNDLED, DEFAULT_OUT, SET_NAMES, make_set
from segls.cli.common import run_command


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of the sets")
    parser.add_argument(
        "--sets", nargs="+", choices=SET_NAMES, help="sets to make (default: all; real sets "
        "whose source package is not installed are skipped with a note)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic sets")
    parser.add_argument("--overwrite", action="store_true", help="replace existing sets")
    return parser.parse_args(argv)


def class_summary(root: Path, split: str, num_classes: int) -> str:
    """Per class: percent of the split's pixels and number of images holding it."""
    pixels = np.zeros(num_classes, np.int64)
    images = np.zeros(num_classes, np.int64)
    for path in sorted((root / "masks" / split).glob("*.png")):
        counts = np.bincount(np.asarray(Image.open(path)).ravel(), minlength=num_classes)
        pixels += counts[:num_classes]
        images += counts[:num_classes] > 0
    shares = 100 * pixels / max(int(pixels.sum()), 1)
    return " ".join(f"{share:.2f}%/{count}" for share, count in zip(shares, images, strict=True))


def describe(root: Path, seconds: float) -> str:
    """One paragraph on a written set: counts, size on disk, time, class shares."""
    classes = (root / "classes.txt").read_text(encoding="utf-8").split()
    files = [path for path in root.rglob("*") if path.is_file()]
    size = sum(path.stat().st_size for path in files) / 2**20
    counts = {s: len(list((root / "masks" / s).glob("*.png"))) for s in ("train", "val")}
    lines = [
        f"{root}: {len(classes)} classes, train {counts['train']}, val {counts['val']}, "
        f"{size:.2f} MiB, made in {seconds:.1f} s",
        f"  classes: {', '.join(classes)}",
    ]
    for split in counts:
        lines.append(f"  {split} % pixels/images: {class_summary(root, split, len(classes))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Make each set, skipping real sets whose package is missing unless they were named."""
    args = parse_args(argv)
    for name, path in BUNDLED.items():
        print(f"{name}: the bundled sample, {path} (python tools/prepare_sample.py)")
    for name in args.sets or SET_NAMES:
        start = time.perf_counter()
        try:
            root = make_set(name, args.out, args.seed, args.overwrite)
        except FileNotFoundError as error:
            if args.sets or name not in REAL:
                raise
            print(f"skipped {name}: {error}")
            continue
        print(describe(root, time.perf_counter() - start))


def run(argv: list[str] | None = None) -> int:
    """`main`, with the errors a user can act on printed as one line; returns the exit status."""
    return run_command(main, argv, lambda: (FileNotFoundError, FileExistsError, ValueError))
