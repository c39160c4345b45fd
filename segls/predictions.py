"""Predictions for people: class-index masks, colour overlays, unique file names.

Shared by ``tools/test.py`` and ``tools/infer.py``, which write them through `segls.io`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from segls.visualize import colorize, displayable

__all__ = ["mask_array", "overlay", "unique_names"]


def mask_array(prediction: torch.Tensor, num_classes: int) -> np.ndarray:
    """An H×W map of class indices as uint8, or uint16 when there are more than 256 classes."""
    if num_classes > 65536:
        raise ValueError(f"{num_classes} classes do not fit a 16-bit PNG mask (at most 65536)")
    dtype = np.uint8 if num_classes <= 256 else np.uint16
    return prediction.detach().cpu().numpy().astype(dtype)


def overlay(
    image: torch.Tensor,
    prediction: torch.Tensor,
    palette: Sequence[Sequence[int]],
    mean: Sequence[float],
    std: Sequence[float],
    alpha: float = 0.5,
) -> np.ndarray:
    """The image (see `segls.visualize.displayable`) blended with the prediction's colours.

    `alpha` is the weight of the colours: 0 shows the image alone, 1 the colours alone.
    Returns uint8 H×W×3 RGB.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    shown = displayable(image, mean, std).float()
    colours = colorize(prediction, palette).float()
    blended = (1.0 - alpha) * shown + alpha * colours
    return blended.round().clamp(0, 255).to(torch.uint8).numpy()


def _folders(path: Path) -> list[str]:
    """The folder names above `path`, without the root and "." or ".." parts."""
    return [part for part in path.parent.parts if part not in (path.anchor, ".", "..")]


def unique_names(paths: Sequence[Path]) -> list[str]:
    """An output name per path: its stem, with parent folders prefixed where stems clash.

    ``a/x.png`` and ``b/x.tif`` become ``a_x`` and ``b_x``; names that still clash (or differ
    only in letter case, which collide on some file systems) get ``_2``, ``_3``, ...
    """
    paths = [Path(path) for path in paths]
    names = [path.stem for path in paths]
    folders = [_folders(path) for path in paths]
    for depth in range(1, max((len(parts) for parts in folders), default=0) + 1):
        counts = Counter(name.casefold() for name in names)
        clashing = [index for index, name in enumerate(names) if counts[name.casefold()] > 1]
        if not clashing:
            break
        for index in clashing:
            names[index] = "_".join([*folders[index][-depth:], paths[index].stem])
    taken: set[str] = set()
    unique = []
    for name in names:
        candidate, number = name, 1
        while candidate.casefold() in taken:
            number += 1
            candidate = f"{name}_{number}"
        taken.add(candidate.casefold())
        unique.append(candidate)
    return unique
