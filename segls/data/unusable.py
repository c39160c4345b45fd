"""Why a split has no pair to learn from: colour-coded masks, unreadable images, or both.

When every pair of the training split failed, the fingerprint has nothing to plan from;
`no_usable_pairs` turns the failures into one message that says what was found. Colour masks
(the usual mistake: masks saved as coloured pictures) get the colours they hold, with pixel
counts, so the user can map each to a class id.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from segls.data.inventory import Problem
from segls.data.readers import MASK_MODES, TIFF_EXTS

MAX_COLOURS = 16  # more distinct colours than this are no small set to map by hand
MAX_COLOUR_MASKS = 100  # colour masks read again to count colours


def colour_mask(path: str | Path) -> np.ndarray | None:
    """The H×W×C pixels of a mask stored as a colour picture (3 or 4 channels), else None."""
    path = Path(path)
    try:
        if path.suffix.lower() in TIFF_EXTS:
            array = tifffile.imread(path)
        else:
            with Image.open(path) as picture:
                if picture.mode in MASK_MODES:
                    return None
                array = np.asarray(picture)
    except Exception:  # unreadable: not a colour mask, and its own problem says why
        return None
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        return array
    return None


def colour_counts(masks: list[np.ndarray]) -> Counter | None:
    """Pixels per RGB colour over `masks`, or None once more than MAX_COLOURS are found."""
    counts: Counter = Counter()
    for mask in masks:
        rgb = mask[..., :3].astype(np.uint32)
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        values, pixels = np.unique(packed, return_counts=True)
        counts.update(dict(zip(values.tolist(), pixels.tolist(), strict=True)))
        if len(counts) > MAX_COLOURS:
            return None
    return counts


def _colour_text(counts: Counter | None, masks_read: int) -> str:
    """The colours found, most pixels first, with the conversion they call for."""
    if counts is None:
        return (
            f"they hold more than {MAX_COLOURS} colours (smoothed edges or JPEG-like artefacts?): "
            "export them again without anti-aliasing, one flat colour per class"
        )
    colours = [((value >> 16) & 255, (value >> 8) & 255, value & 255) for value in counts]
    listed = ", ".join(
        f"({red}, {green}, {blue}) {counts[(red << 16) | (green << 8) | blue]} px"
        for red, green, blue in sorted(
            colours, key=lambda c: -counts[(c[0] << 16) | (c[1] << 8) | c[2]]
        )
    )
    text = f"colours found in {masks_read} of them (RGB, pixels): {listed}"
    if all(red == green == blue for red, green, blue in colours):
        text += "; all are grey (R = G = B): save one channel (e.g. mask[..., 0]) as the mask"
    return text


def no_usable_pairs(split: str, root: str, problems: list[Problem], pairs: int) -> str:
    """One message for a split none of whose `pairs` image/mask pairs could be read.

    `problems` are the fingerprint's; the "unreadable" ones name the pair in their files.
    """
    failed = [problem for problem in problems if problem.kind == "unreadable"]
    colour_files, images, masks = [], [], []
    for problem in failed:
        image_path, mask_path = problem.files
        if problem.message.startswith(image_path):
            images.append(problem)
        elif colour_mask(mask_path) is not None:
            colour_files.append(mask_path)
        else:
            masks.append(problem)
    head = f"{root}: no {split} pair of the {pairs} can be read"
    parts = []
    if colour_files:
        read = [colour_mask(path) for path in colour_files[:MAX_COLOUR_MASKS]]
        read = [mask for mask in read if mask is not None]
        channels = sorted({mask.shape[-1] for mask in read})
        counts = colour_counts(read)
        every = "all " if len(colour_files) == len(failed) else ""
        parts.append(
            f"{every}{len(colour_files)} masks have {'/'.join(map(str, channels))} channels "
            f"(e.g. {colour_files[0]}): colour-coded masks; convert each colour to a class id "
            f"(a palette PNG or one id per pixel); {_colour_text(counts, len(read))}"
        )
    if images:
        parts.append(
            f"{len(images)} images cannot be read (e.g. {images[0].message}): replace them "
            "with PNG/JPEG/TIFF files that open"
        )
    if masks:
        parts.append(f"{len(masks)} masks cannot be read (e.g. {masks[0].message})")
    return f"{head}: " + "; ".join(parts) if parts else head
