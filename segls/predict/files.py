"""Prediction files for people: class-index masks and colour overlays, under unique names.

Masks follow PASCAL VOC: each pixel holds its class id, and the PNG carries the config's
palette (mode P), so any viewer shows the classes in colour while a program reads the ids.
Above 256 classes (more than a palette holds), or when asked for raw masks, the PNG is
greyscale: 8-bit, or 16-bit above 256 classes. `mask_kind` says which a run writes.

`save_masks` writes the masks of a data loader (``tools/test.py --save-masks``), `Predictor`
those of your own images with their overlays (``tools/infer.py``), `write_scores` a test's
scores and reliability diagram; all through `segls.io`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from segls.config import Config
from segls.data import DataError, build_transform, read_image, resolve_classes
from segls.data.readers import IMAGE_EXTS
from segls.io import remove_files, write_json, write_png
from segls.models import InferenceSettings, predict_classes, predict_logits
from segls.predict.evaluation import nonfinite_cause
from segls.predict.pictures import overlay
from segls.predict.plots import reliability_diagram
from segls.runtime import is_out_of_memory, progress

__all__ = [
    "Predictor",
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
    return prediction.detach().cpu().numpy().astype(dtype)


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


class Predictor:
    """Batches same-size images, predicts them, and writes mask and overlay per image."""

    def __init__(
        self,
        model: nn.Module,
        cfg: Config,
        settings: InferenceSettings,
        amp_dtype: torch.dtype | None,
        device: torch.device,
        out_dir: Path,
        batch_size: int,
        alpha: float,
        raw_masks: bool = False,
    ) -> None:
        self.model, self.cfg, self.settings, self.amp_dtype = model, cfg, settings, amp_dtype
        self.device, self.out_dir, self.batch_size, self.alpha = device, out_dir, batch_size, alpha
        self.raw_masks = raw_masks
        self.transform = build_transform(cfg.data, train=False)
        self.palette = resolve_classes(cfg.data)[1]
        self.pending: dict[tuple[int, int], list[tuple[torch.Tensor, str]]] = {}
        self.written = 0
        self.refused: list[tuple[str, str]] = []  # (name, why): predictions not written

    def load(self, path: Path) -> torch.Tensor:
        """The normalised C×H×W image; DataError/OSError naming `path` if it cannot be used."""
        image = read_image(path)
        channels = self.cfg.data.in_channels
        if image.shape[2] != channels:
            raise DataError(
                f"{path}: image has {image.shape[2]} channels but data.in_channels={channels}; "
                "use images like the training ones or a config for this channel count"
            )
        return self.transform(image)[0]

    def add(self, image: torch.Tensor, name: str) -> int:
        """Queue an image; predict its size group once full. Returns the images written."""
        group = self.pending.setdefault(tuple(image.shape[-2:]), [])
        group.append((image, name))
        if len(group) < self.batch_size:
            return 0
        return self._run(self.pending.pop(tuple(image.shape[-2:])))

    def flush(self) -> int:
        """Predict every queued image; returns the images written."""
        groups, self.pending = list(self.pending.values()), {}
        return sum(self._run(group) for group in groups)

    def _run(self, group: list[tuple[torch.Tensor, str]]) -> int:
        """Predict one batch of same-size images and write their files; returns the count.

        An image whose prediction holds NaN or inf, or that does not fit in memory (alone),
        gets no files: it goes to `refused`. A batch that does not fit is retried image by image.
        """
        try:
            predictions, finite = self._predict([image for image, _ in group])
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            if len(group) > 1:
                return sum(self._run([item]) for item in group)
            self._refuse_for_memory(group[0], error)
            return 1
        for position, (image, name) in enumerate(group):
            if not finite[position]:
                cause = nonfinite_cause(image)
                self.refused.append(
                    (name, f"its prediction holds NaN or inf, so no files: {cause}")
                )
                continue
            try:
                self._write(image, predictions[position], name)
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                self._refuse_for_memory((image, name), error)
                continue
            self.written += 1
        return len(group)

    def _predict(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[bool]]:
        """(N×H×W class ids on the CPU, N finite flags) of same-size images."""
        batch = images[0].unsqueeze(0) if len(images) == 1 else torch.stack(images)
        ids, finite = predict_classes(
            self.model, batch.to(self.device), self.settings, self.amp_dtype
        )
        return ids.cpu(), finite.tolist()

    def _write(self, image: torch.Tensor, prediction: torch.Tensor, name: str) -> None:
        """Write one image's mask and overlay; neither is left behind if either fails."""
        data = self.cfg.data
        mask_path = self.out_dir / f"{name}_mask.png"
        try:
            write_mask(mask_path, prediction, self.palette, self.raw_masks)
            shown = overlay(image, prediction, self.palette, data.mean, data.std, self.alpha)
            write_png(self.out_dir / f"{name}_overlay.png", shown)
        except BaseException:
            remove_files([mask_path])
            raise

    def _refuse_for_memory(self, item: tuple[torch.Tensor, str], error: BaseException) -> None:
        """Note that an image is too large to predict here, with what to do instead."""
        image, name = item
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        height, width = image.shape[-2:]
        hint = (
            "use a smaller --crop"
            if self.settings.mode == "slide"
            else "use --mode slide --crop H W, which holds one row of windows at a time"
        )
        self.refused.append((
            name,
            f"not enough memory to predict this {height}x{width} image on {self.device} "
            f"({_first_line(error)}); {hint}, or split the image",
        ))  # fmt: skip


def _first_line(error: BaseException) -> str:
    """What failed, in a few words: the size of the allocation, or the error's first line."""
    found = re.search(r"tried to allocate (\d+) bytes", str(error))
    if found:
        return f"an allocation of {int(found.group(1)) / 2**20:.0f} MiB failed"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
