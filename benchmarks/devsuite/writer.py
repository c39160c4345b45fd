"""Writing a folder-format dataset atomically: staged in a hidden folder, renamed into place."""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from segls.data.classes import CLASSES_FILE
from segls.data.sample import encode_tiff
from segls.io import encode_png, staged_directory, write_bytes

FILE_MODE = 0o644
DIR_MODE = 0o755
SPLIT_IDS = {"train": 0, "val": 1}

# (split, stem, image, mask)
Sample = tuple[str, str, np.ndarray, np.ndarray]


def image_rng(seed: int, set_name: str, split: str, index: int) -> np.random.Generator:
    """The generator of one image: depends on the seed, set, split and index, not on order."""
    return np.random.default_rng([seed, zlib.crc32(set_name.encode()), SPLIT_IDS[split], index])


def encode_image(image: np.ndarray) -> tuple[bytes, str]:
    """(bytes, suffix): 8-bit images as PNG, 16-bit ones as zlib TIFF (both lossless)."""
    if image.dtype == np.uint8 and (image.ndim == 2 or image.shape[-1] == 3):
        return encode_png(image, compression=9), ".png"
    return encode_tiff(image), ".tif"


def write_folder_dataset(
    root: str | Path,
    classes: Iterable[str],
    samples: Iterable[Sample],
    overwrite: bool = False,
    license_text: bytes | None = None,
) -> Path:
    """Write `samples` as ``images/<split>/<stem>`` and ``masks/<split>/<stem>.png`` under `root`.

    With `classes.txt` and, when given, a LICENSE. Nothing appears at `root` until every file
    is written (`segls.io.staged_directory`); an existing `root` needs `overwrite`.
    """
    root = Path(root)
    if root.exists() and not overwrite:
        raise FileExistsError(f"{root} already exists; pass --overwrite to regenerate it")
    with staged_directory(root, DIR_MODE) as staging:
        for split, stem, image, mask in samples:
            data, suffix = encode_image(image)
            write_bytes(staging / "images" / split / f"{stem}{suffix}", data, FILE_MODE)
            mask_png = encode_png(mask.astype(np.uint8), compression=9)
            write_bytes(staging / "masks" / split / f"{stem}.png", mask_png, FILE_MODE)
        names = "".join(f"{name}\n" for name in classes).encode()
        write_bytes(staging / CLASSES_FILE, names, FILE_MODE)
        if license_text is not None:
            write_bytes(staging / "LICENSE", license_text, FILE_MODE)
    return root
