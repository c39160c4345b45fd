"""A dataset's fingerprint: what its images and masks hold, read once, streaming.

nnU-Net's idea for 2-D datasets: one pass over the training and validation pairs of a
`segls.data.inventory.Inventory` adds up per-image summaries (`segls.data.image_stats`):
sizes, channels, dtypes, intensity histograms and moments, class pixel and image counts and
where in the image each class lies, gradient statistics, and a hash per image. Nothing per
pixel is kept, so datasets larger than RAM work. What would break training, or mislead it,
is collected as `Problem`s.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segls.data.classes import DEFAULT_CLASSES, read_class_names
from segls.data.datasets import LabelMapper
from segls.data.fingerprint_checks import (
    class_problems,
    consistency_problems,
    infer_classes,
    near_duplicate_problem,
)
from segls.data.image_stats import ImageSummary, bin_values, summarise_image, summarise_mask
from segls.data.inventory import Inventory, Problem, ReadSettings
from segls.data.readers import DataError, read_image, read_mask
from segls.data.unusable import no_usable_pairs
from segls.runtime import progress

IGNORE_INDEX = 255
WIDE_IGNORE_INDEX = 65535  # when class ids reach 255


@dataclass
class ImageRecord:
    """The per-image numbers a fingerprint keeps (no pixels)."""

    image: str
    mask: str
    height: int
    width: int
    channels: int
    dtype: str
    read_seconds: float
    bounds: np.ndarray  # 2 × C percentiles of `data.scaling: percentile`
    gradient_skew: np.ndarray  # 2 × C, along x then y
    gradient_var: np.ndarray  # 2 × C
    digest: np.ndarray  # 32-byte difference hash
    mask_values: np.ndarray  # the stored values the mask holds


@dataclass
class IntensityTotals:
    """Running sums over the images of one split that share a channel count and histogram key."""

    key: str
    histogram: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    dtype_sums: np.ndarray
    percentile_sums: np.ndarray
    pixels: int = 0
    images: int = 0

    @property
    def bin_values(self) -> np.ndarray:
        """The value of each histogram bin."""
        return bin_values(np.dtype(self.key))

    def mean_std(self, scaling: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std of the pixels after ``data.scaling`` = `scaling`."""
        sums = self.dtype_sums if scaling == "dtype" else self.percentile_sums
        mean = sums[0] / self.pixels
        return mean, np.sqrt(np.maximum(sums[1] / self.pixels - mean**2, 0.0))


@dataclass
class SplitStats:
    """Totals over one split: records per image, intensity sums, mask value counts."""

    name: str
    records: list[ImageRecord] = field(default_factory=list)
    intensity: dict[tuple[int, str], IntensityTotals] = field(default_factory=dict)
    mask_values: dict[int, np.ndarray] = field(default_factory=dict)  # pixels, images, y, x sums

    def add(self, record: ImageRecord, summary: ImageSummary, mask_summary: tuple) -> None:
        """Add one image's `summary` and its mask's `summarise_mask`."""
        self.records.append(record)
        if summary.finite:
            group = (summary.channels, summary.key)
            totals = self.intensity.get(group)
            if totals is None:
                totals = IntensityTotals(
                    summary.key, np.zeros_like(summary.histogram), summary.minimum.copy(),
                    summary.maximum.copy(), np.zeros((2, summary.channels)),
                    np.zeros((2, summary.channels)),
                )  # fmt: skip
                self.intensity[group] = totals
            totals.histogram += summary.histogram
            np.minimum(totals.minimum, summary.minimum, out=totals.minimum)
            np.maximum(totals.maximum, summary.maximum, out=totals.maximum)
            totals.dtype_sums += summary.dtype_sums
            totals.percentile_sums += summary.percentile_sums
            totals.pixels += summary.height * summary.width
            totals.images += 1
        for value, count, row_sum, col_sum in zip(*mask_summary, strict=True):
            entry = self.mask_values.setdefault(int(value), np.zeros(4))
            entry += (count, 1, row_sum, col_sum)

    def main_intensity(self) -> IntensityTotals | None:
        """The totals of the most common (channels, dtype) group, or None without images."""
        if not self.intensity:
            return None
        return max(self.intensity.values(), key=lambda totals: totals.images)


@dataclass
class Fingerprint:
    """Everything one pass over a dataset learned; `segls.plan` turns it into a config."""

    root: str
    format: str
    train_split: str
    val_split: str
    splits: dict[str, SplitStats]
    class_names: list[str]
    class_source: str
    ignore_index: int
    percentiles: list[float]
    reduce_zero_label: bool = False
    cityscapes_labels: str = "labelTrainIds"
    other_splits: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    proposed_lists: dict[str, list[str]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def train(self) -> SplitStats:
        """The training split's totals."""
        return self.splits[self.train_split]

    @property
    def val(self) -> SplitStats:
        """The validation split's totals."""
        return self.splits[self.val_split]

    def read_settings(self) -> ReadSettings:
        """The ``data.*`` fields that say how masks are read, for `LabelMapper`."""
        return ReadSettings(
            format=self.format, root=self.root, num_classes=self.num_classes,
            ignore_index=self.ignore_index, reduce_zero_label=self.reduce_zero_label,
            cityscapes_labels=self.cityscapes_labels,
        )  # fmt: skip

    def class_table(self, split: str) -> dict[str, np.ndarray]:
        """Per class: ``pixels``, ``images`` and mean ``row``/``col`` position; plus ``ignore``.

        Stored mask values are mapped to classes as training maps them (`LabelMapper`);
        ``ignore`` holds the ignored pixel count, ``invalid`` that of values that are neither.
        """
        classes = self.num_classes
        pixels, images = np.zeros(classes, np.int64), np.zeros(classes, np.int64)
        rows, cols = np.zeros(classes), np.zeros(classes)
        ignore = invalid = 0
        mapper = LabelMapper(self.read_settings())
        for value, (count, seen, row_sum, col_sum) in self.splits[split].mask_values.items():
            label = int(mapper.map_values(np.array([value]))[0])
            if 0 <= label < classes:
                pixels[label] += int(count)
                images[label] += int(seen)
                rows[label] += row_sum
                cols[label] += col_sum
            elif label == self.ignore_index:
                ignore += int(count)
            else:
                invalid += int(count)
        with np.errstate(invalid="ignore", divide="ignore"):
            row_mean, col_mean = rows / pixels, cols / pixels
        return {
            "pixels": pixels, "images": images, "row": row_mean, "col": col_mean,
            "ignore": np.int64(ignore), "invalid": np.int64(invalid),
        }  # fmt: skip


def _class_spec(inventory: Inventory) -> tuple[list[str] | None, str, bool]:
    """(names or None when they must be inferred, their source, reduce_zero_label)."""
    names = read_class_names(inventory.root)
    reduce_zero = inventory.format == "ade20k"
    if names is not None:
        return names, f"{inventory.root / 'classes.txt'}", reduce_zero
    if inventory.format in DEFAULT_CLASSES:
        return (
            list(DEFAULT_CLASSES[inventory.format]),
            f"the {inventory.format} classes",
            reduce_zero,
        )
    return None, "the mask values", False


def _read_pair(image_path: Path, mask_path: Path, problems: list[Problem]):
    """(image, mask, seconds) or None after recording why the pair cannot be read."""
    start = time.perf_counter()
    try:
        image, mask = read_image(image_path), read_mask(mask_path)
    except (DataError, OSError) as error:
        problems.append(Problem("unreadable", str(error), files=[str(image_path), str(mask_path)]))
        return None
    seconds = time.perf_counter() - start
    if mask.shape != image.shape[:2]:
        problems.append(Problem(
            "size_mismatch",
            f"{mask_path}: mask is {mask.shape[0]}x{mask.shape[1]} (HxW) but image {image_path} "
            f"is {image.shape[0]}x{image.shape[1]}",
            files=[str(image_path), str(mask_path)],
        ))  # fmt: skip
    return image, mask, seconds


def _stream(inventory: Inventory, percentiles: list[float]):
    """Read every train and val pair once; returns the SplitStats and the problems found."""
    problems: list[Problem] = []
    splits = {name: SplitStats(name) for name in (inventory.train_split, inventory.val_split)}
    total = sum(len(inventory.pairs.get(name, ([], []))[0]) for name in splits)
    with progress(total, "fingerprint") as bar:
        for name, stats in splits.items():
            for image_path, mask_path in zip(*inventory.pairs.get(name, ([], [])), strict=True):
                pair = _read_pair(image_path, mask_path, problems)
                bar.update(1)
                if pair is None:
                    continue
                image, mask, seconds = pair
                summary = summarise_image(image, percentiles)
                if not summary.finite:
                    problems.append(Problem(
                        "not_finite", f"{image_path} holds NaN or infinite pixels",
                        files=[str(image_path)],
                    ))  # fmt: skip
                mask_summary = summarise_mask(mask)
                record = ImageRecord(
                    str(image_path), str(mask_path), summary.height, summary.width,
                    summary.channels, summary.dtype, seconds, summary.bounds,
                    summary.gradient_skew, summary.gradient_var, summary.digest, mask_summary[0],
                )  # fmt: skip
                stats.add(record, summary, mask_summary)
    return splits, problems


def fingerprint(inventory: Inventory, percentiles: Sequence[float]) -> Fingerprint:
    """Read the train and val pairs of `inventory` once and add up their fingerprint.

    `percentiles` are those of ``data.scaling: percentile`` (``data.percentiles``).
    """
    percentiles = [float(q) for q in percentiles]
    names, source, reduce_zero = _class_spec(inventory)
    splits, problems = _stream(inventory, percentiles)
    train_images = {str(path) for path in inventory.pairs.get(inventory.train_split, ([], []))[0]}
    if train_images and not splits[inventory.train_split].records:
        failed = [
            problem
            for problem in problems
            if problem.files[:1] and problem.files[0] in train_images
        ]
        raise DataError(
            no_usable_pairs(inventory.train_split, str(inventory.root), failed, len(train_images))
        )
    seen = Counter()
    for stats in splits.values():
        seen.update({value: int(entry[0]) for value, entry in stats.mask_values.items()})
    inferred_problems: list[Problem] = []
    if names is None:
        names, ignore_index, inferred_problems = infer_classes(seen)
    else:
        ignore_index = IGNORE_INDEX if len(names) <= IGNORE_INDEX else WIDE_IGNORE_INDEX
    result = Fingerprint(
        str(inventory.root), inventory.format, inventory.train_split, inventory.val_split,
        splits, names, source, ignore_index, percentiles, reduce_zero,
        inventory.cityscapes_labels, dict(inventory.other_splits),
        list(inventory.problems) + problems + inferred_problems, dict(inventory.proposed_lists),
    )  # fmt: skip
    result.problems += consistency_problems(result)
    result.problems += class_problems(result, _files_by_value(result))
    duplicate = near_duplicate_problem(result.train.records, result.val.records)
    if duplicate is not None and result.train_split != result.val_split:
        result.problems.append(duplicate)
    return result


def _files_by_value(fp: Fingerprint) -> dict[int, list[str]]:
    """The mask files holding each stored value that maps to no class and is not ignored."""
    mapper = LabelMapper(fp.read_settings())
    files: dict[int, list[str]] = defaultdict(list)
    for stats in fp.splits.values():
        for record in stats.records:
            values = record.mask_values
            for value in values[~mapper.is_valid(mapper.map_values(values))].tolist():
                files[value].append(record.mask)
    return files
