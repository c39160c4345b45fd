"""The segmentation Dataset: paired files from a layout, label mapping, checks and caching."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from segls.data.classes import CITYSCAPES_EVAL_IDS, resolve_classes
from segls.data.layouts import LAYOUTS
from segls.data.readers import DataError, read_image, read_mask
from segls.data.transforms import SegTransform, build_transform

if TYPE_CHECKING:
    from segls.config import DataConfig

LUT_SIZE = 65536  # uint8 and uint16 masks are mapped with a table; wider ones elementwise


class LabelMapper:
    """Maps stored mask values to train ids (+ ignore) and rejects values that are neither.

    Cityscapes labelIds go to the 19 train ids (all other ids to ignore); with
    ``reduce_zero_label`` 0 becomes ignore and every other value drops by one.
    """

    def __init__(self, data_cfg: DataConfig) -> None:
        self.num_classes = int(data_cfg.num_classes)
        self.ignore_index = int(data_cfg.ignore_index)
        self.format = data_cfg.format
        self.labels_to_train_ids = (
            data_cfg.format == "cityscapes" and data_cfg.cityscapes_labels == "labelIds"
        )
        self.reduce_zero_label = bool(data_cfg.reduce_zero_label)
        compact = self.num_classes <= 256 and 0 <= self.ignore_index <= 255
        self.dtype = np.uint8 if compact else np.int32
        mapped = self.map_values(np.arange(LUT_SIZE, dtype=np.int64))
        self.valid_lut = self.is_valid(mapped)
        self.lut = np.where(self.valid_lut, mapped, 0).astype(self.dtype)

    def map_values(self, values: np.ndarray) -> np.ndarray:
        """Elementwise mapping of int64 stored values to label values."""
        ignore = self.ignore_index
        if self.labels_to_train_ids:
            table = np.full(256, ignore, dtype=np.int64)
            table[CITYSCAPES_EVAL_IDS] = np.arange(len(CITYSCAPES_EVAL_IDS))
            in_table = (values >= 0) & (values < table.size)
            values = np.where(in_table, table[np.clip(values, 0, table.size - 1)], ignore)
        if self.reduce_zero_label:
            keep = values == ignore
            values = np.where(keep, ignore, np.where(values == 0, ignore, values - 1))
        return values

    def is_valid(self, labels: np.ndarray) -> np.ndarray:
        """Whether each mapped value is a class id or the ignore index."""
        return ((labels >= 0) & (labels < self.num_classes)) | (labels == self.ignore_index)

    def describe(self) -> str:
        """The mapping in words, for error messages."""
        steps = []
        if self.labels_to_train_ids:
            steps.append("Cityscapes labelIds -> train ids")
        if self.reduce_zero_label:
            steps.append("reduce_zero_label")
        return f" after {' and '.join(steps)}" if steps else ""

    def hint(self) -> str:
        """What to change when a mask holds values outside the classes."""
        if self.format == "ade20k" and not self.reduce_zero_label:
            return (
                "ADE20K masks store 0 = other and 1..150 = classes: set data.reduce_zero_label=true"
            )
        if self.format == "cityscapes" and not self.labels_to_train_ids:
            return "for *_gtFine_labelIds.png masks set data.cityscapes_labels=labelIds"
        return "check data.num_classes and data.ignore_index, or fix the mask"

    def __call__(self, mask: np.ndarray, path: Path | str = "<mask>") -> np.ndarray:
        """Mapped labels of ``mask`` in a compact dtype; raises DataError naming bad values."""
        if mask.dtype in (np.uint8, np.uint16):
            valid = self.valid_lut[mask]
        else:
            labels = self.map_values(mask.astype(np.int64))
            valid = self.is_valid(labels)
        if not valid.all():
            bad = np.unique(mask[~valid]).tolist()
            raise DataError(
                f"{path}: mask values {bad[:20]} are neither a class id "
                f"(0..{self.num_classes - 1}) nor data.ignore_index={self.ignore_index}"
                f"{self.describe()}; {self.hint()}"
            )
        if mask.dtype in (np.uint8, np.uint16):
            return self.lut[mask]
        return labels.astype(self.dtype)


class SegDataset(Dataset):
    """Image/mask pairs read from disk; item i -> (float32 C×H×W image, int64 H×W label).

    With ``cache`` the decoded image and mapped label stay in memory after the first read
    (one cache per DataLoader worker process). With ``repeat`` = k the dataset lists every
    image k times (item i is image ``i % n``), so an epoch draws k random crops of each.
    """

    def __init__(
        self,
        image_paths: list[Path],
        label_paths: list[Path],
        transform: SegTransform,
        mapper: LabelMapper,
        in_channels: int,
        class_names: list[str],
        palette: list[list[int]],
        cache: bool = False,
        repeat: int = 1,
    ) -> None:
        if len(image_paths) != len(label_paths):
            raise ValueError(f"{len(image_paths)} images but {len(label_paths)} label paths")
        if repeat < 1:
            raise ValueError(f"repeat={repeat} must be at least 1")
        self.image_paths = list(image_paths)
        self.label_paths = list(label_paths)
        self.transform = transform
        self.mapper = mapper
        self.in_channels = int(in_channels)
        self.class_names = class_names
        self.palette = palette
        self.cache = cache
        self.repeat = int(repeat)
        self._cached: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._bounds: dict[int, np.ndarray | None] = {}

    def __len__(self) -> int:
        return len(self.image_paths) * self.repeat

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decoded H×W×C image (stored dtype) and mapped H×W label, checked, before transforms."""
        index %= len(self.image_paths)
        if index in self._cached:
            return self._cached[index]
        image_path, label_path = self.image_paths[index], self.label_paths[index]
        image = read_image(image_path)
        if image.shape[2] != self.in_channels:
            raise DataError(
                f"{image_path}: image has {image.shape[2]} channels but data.in_channels="
                f"{self.in_channels}; set data.in_channels={image.shape[2]} (with as many "
                "data.mean/data.std values) or convert the images"
            )
        mask = read_mask(label_path)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"{label_path}: mask size {mask.shape[0]}x{mask.shape[1]} (HxW) differs from "
                f"image {image_path} size {image.shape[0]}x{image.shape[1]}; masks must match "
                "their image pixel for pixel"
            )
        sample = image, self.mapper(mask, label_path)
        if self.cache:
            self._cached[index] = sample
        return sample

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.load(index)
        index %= len(self.image_paths)
        bounds = self._bounds.get(index)
        if bounds is None:
            bounds = self.transform.bounds(image)
            if self.cache:
                self._bounds[index] = bounds
        return self.transform(image, label, bounds)

    def check_masks(self) -> None:
        """Read every mask and check its values: DataError naming the first bad file."""
        for path in self.label_paths:
            self.mapper(read_mask(path), path)

    def reseed(self, seed: int | None) -> None:
        """Reset the random augmentation stream (called per DataLoader worker)."""
        self.transform.set_random_seed(seed)


def build_dataset(
    data_cfg: DataConfig, split: str, train: bool, seed: int | None = None
) -> SegDataset:
    """Dataset of ``split`` in ``data_cfg.format``, with training or validation transforms."""
    root = Path(data_cfg.root)
    if not root.is_dir():
        raise DataError(
            f"data.root={str(data_cfg.root)!r} ({root.resolve()}) is not a directory; "
            "relative roots are resolved against the current working directory"
        )
    class_names, palette = resolve_classes(data_cfg)
    mapper = LabelMapper(data_cfg)
    transform = build_transform(data_cfg, train, seed)
    image_paths, label_paths = LAYOUTS[data_cfg.format](root, split, data_cfg)
    return SegDataset(
        image_paths,
        label_paths,
        transform,
        mapper,
        data_cfg.in_channels,
        class_names,
        palette,
        cache=bool(data_cfg.cache),
        repeat=data_cfg.repeat if train else 1,
    )
