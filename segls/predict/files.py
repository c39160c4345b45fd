"""Prediction files for people: class-index masks and colour overlays, under unique names.

Masks follow PASCAL VOC: each pixel holds its class id, and the PNG carries the config's
palette (mode P), so any viewer shows the classes in colour while a program reads the ids.
Above 256 classes (more than a palette holds), or when asked for raw masks, the PNG is
greyscale: 8-bit, or 16-bit above 256 classes. `mask_kind` says which a run writes.

`save_masks` writes the masks of a data loader (``tools/test.py --save-masks``),
`write_scores` a test's scores and reliability diagram; all through `segls.io`. Your own
images' masks and overlays (``tools/infer.py``) are `segls.predict.predictor`'s.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from segls.data.readers import IMAGE_EXTS
from segls.io import write_json, write_png
from segls.models import InferenceSettings, predict_logits
from segls.predict.plots import reliability_diagram
from segls.runtime import progress

__all__ = [
    "collect_images",
    "mask_array",
    "mask_kind",
    "save_masks",
    "unique_names",
    "write_mask",
    "write_scores",
]


def mask_array(prediction: torch.Tensor, num_classes: int) -> np.ndarray:
    """An H×W map of class indices as uint8, or uint16 when there are more than 256 classes."""
    if num_classes > 65536:
        raise ValueError(f"{num_classes} classes do not fit a 16-bit PNG mask (at most 65536)")
    dtype = np.uint8 if num_classes <= 256 else np.uint16
    return prediction.detach().cpu().numpy().astype(dtype, copy=False)


def mask_kind(num_classes: int, raw: bool = False) -> str:
    """How `write_mask` stores the class ids of `num_classes` classes, for the user to read."""
    if num_classes > 256:
        return "16-bit greyscale class ids (more than 256 classes do not fit a PNG palette)"
    if raw:
        return "8-bit greyscale class ids"
    return "class ids with the config's palette (palette PNGs, as PASCAL VOC's)"


def write_mask(
    path: Path, prediction: torch.Tensor, palette: Sequence[Sequence[int]], raw: bool = False
) -> None:
    """Write an H×W map of class ids (one `palette` colour per class) as `mask_kind` says."""
    array = mask_array(prediction, len(palette))
    use_palette = not raw and array.dtype == np.uint8
    write_png(path, array, palette=[list(colour) for colour in palette] if use_palette else None)


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


def collect_images(inputs: list[str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The image files named or found under the folders (each once), and inputs that are neither."""
    files, missing, seen = [], [], set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")
            )
            if not found:
                missing.append((path, f"folder has no {'/'.join(IMAGE_EXTS)} images"))
        elif path.is_file():
            found = [path]
        else:
            missing.append((path, "no such file or folder"))
            continue
        for file in found:
            if file.resolve() not in seen:
                seen.add(file.resolve())
                files.append(file)
    return files, missing


def write_scores(out_dir: Path, record: dict, title: str) -> tuple[Path, Path]:
    """Write `record` to out_dir/scores.json and its scores' reliability diagram as a PNG.

    `record` holds the evaluation's ``scores`` (`segls.predict.evaluate`) and whatever says
    how they were made; `title` heads the diagram. Returns the two paths.
    """
    paths = out_dir / "scores.json", out_dir / "reliability.png"
    write_json(paths[0], record)
    write_png(paths[1], reliability_diagram(record["scores"]["calibration"], title))
    return paths


def save_masks(
    model: nn.Module,
    loader: DataLoader,
    settings: InferenceSettings,
    amp_dtype: torch.dtype | None,
    device: torch.device,
    out_dir: Path,
    raw: bool = False,
) -> int:
    """Write each image's predicted class ids to `out_dir`/<name>.png; returns the count.

    The masks carry the dataset's palette unless `raw` (see `write_mask`). The images are
    those of the loader's sampler (a rank's shard under torchrun), in order.
    """
    names, palette = unique_names(loader.dataset.image_paths), loader.dataset.palette
    order = iter(loader.sampler)
    count = 0
    bar = progress(len(loader), "masks", leave=False)
    for images, labels in loader:
        logits = predict_logits(model, images.to(device), labels.shape[-2:], settings, amp_dtype)
        for prediction in logits.argmax(dim=1):
            write_mask(out_dir / f"{names[next(order)]}.png", prediction, palette, raw)
            count += 1
        bar.update(1)
    bar.close()
    return count
