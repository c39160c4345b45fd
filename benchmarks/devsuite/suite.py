"""The development suite: which sets it holds and how each is made into a folder dataset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from benchmarks.devsuite.draw import Size
from benchmarks.devsuite.real import BOUNDARY_CLASSES, REAL, license_text, package_dir
from benchmarks.devsuite.synthetic import SYNTHETIC, SetSpec
from benchmarks.devsuite.writer import Sample, image_rng, write_folder_dataset

DEFAULT_OUT = Path("data/devsuite")
BUNDLED = {"scratch_assay": Path("data/scratch_assay")}  # dataset #1: made by prepare_sample
SET_NAMES = (*SYNTHETIC, *REAL)


def synthetic_samples(
    spec: SetSpec, seed: int, size: Size | None = None, counts: dict[str, int] | None = None
) -> Iterator[Sample]:
    """The pairs of a synthetic set, each drawn from its own (seed, set, split, index) stream."""
    size = spec.size if size is None else size
    for split, count in (spec.counts if counts is None else counts).items():
        for index in range(count):
            image, mask = spec.draw(image_rng(seed, spec.name, split, index), index, size)
            yield split, f"{spec.name}_{index:03d}", image, mask


def make_set(
    name: str,
    out: str | Path = DEFAULT_OUT,
    seed: int = 0,
    overwrite: bool = False,
    size: Size | None = None,
    counts: dict[str, int] | None = None,
    source: str | Path | None = None,
) -> Path:
    """Write the set `name` to ``out/name`` and return that path.

    Synthetic sets take `seed`, and `size` and `counts` to override their defaults (the tests
    make small ones); real sets take `source`, the source package's folder (default: the
    installed package's).
    """
    root = Path(out) / name
    if name in SYNTHETIC:
        spec = SYNTHETIC[name]
        samples = synthetic_samples(spec, seed, size, counts)
        return write_folder_dataset(root, spec.classes, samples, overwrite)
    if name in REAL:
        real, convert, _ = REAL[name]
        folder = package_dir(real) if source is None else Path(source)
        samples = convert(folder)
        licence = license_text(folder, real)
        return write_folder_dataset(root, BOUNDARY_CLASSES, samples, overwrite, licence)
    raise ValueError(f"unknown development set {name!r}; choose from {', '.join(SET_NAMES)}")
