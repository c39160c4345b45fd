"""Rules from a dataset fingerprint to the ``data.*`` and ``eval.*`` values of a config.

Each rule is a small pure function of a `segls.data.fingerprint.Fingerprint` that returns
`Choice`s: the config key, the value, and the reason, which the generated config carries as
a comment. docs/PLANNING.md says where each rule comes from and where it departs from
nnU-Net's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from segls.data.fingerprint import Fingerprint
from segls.data.image_stats import histogram_percentiles
from segls.data.readers import dtype_max

STRIDE = 32  # the encoders' output stride: crops are multiples of it
MIN_CROP_SIDE = 64  # two cells of the deepest feature map
BATCH_SIZE = 8
MAX_BATCH_SHARE = 0.05  # nnU-Net: one batch holds at most 5 % of the training pixels
RANGE_USE_FOR_DTYPE = 0.5  # below this share of the dtype range, scale by percentiles
LAYOUT_OFFSET = 0.1  # a class centred further than this from the middle breaks a mirror
LAYOUT_MIN_SHARE = 0.01  # classes below this share of the pixels do not vote on mirroring
SKEW_MIN_IMAGES = 6  # with fewer images a sign test cannot reject symmetry
SKEW_SIGN_SHARE = 0.9  # this share of images with one sign of the gradient skewness ...
SKEW_MIN_MEDIAN = 0.1  # ... and a median skewness at least this large break a mirror
ISOTROPY = 1.25  # gradient variance ratio x/y within [1/ISOTROPY, ISOTROPY]: turns are safe
RARE_PIXEL_SHARE = 0.01  # classes below this share of the labelled training pixels ...
RARE_IMAGE_SHARE = 0.1  # ... or in fewer than this share of the training images are rare
CACHE_BYTES = 2**30  # decoded train + val images up to this size stay in RAM
WHOLE_EVAL_PIXELS = 2048 * 2048  # larger validation images are evaluated in windows
EVAL_WINDOW = 1024


@dataclass(frozen=True)
class Choice:
    """One config value and why it was chosen."""

    key: str
    value: Any
    why: str


def _main_dtype(fp: Fingerprint) -> np.dtype:
    """The most common image dtype of the training split."""
    dtypes = [record.dtype for record in fp.train.records]
    return np.dtype(max(set(dtypes), key=dtypes.count))


def median_size(fp: Fingerprint) -> tuple[int, int]:
    """Median height and width of the training images."""
    records = fp.train.records
    return (int(np.median([r.height for r in records])), int(np.median([r.width for r in records])))


def layout(fp: Fingerprint) -> list[Choice]:
    """Where the data is and how it is laid out: format, root and the split names."""
    proposed = (
        " (proposed by this tool: no validation split was given)" if fp.proposed_lists else ""
    )
    choices = [
        Choice("data.format", fp.format, "the layout the data was read with"),
        Choice("data.root", fp.root, "the dataset folder given on the command line"),
        Choice("data.train_split", fp.train_split, f"{len(fp.train.records)} images{proposed}"),
        Choice("data.val_split", fp.val_split, f"{len(fp.val.records)} images{proposed}"),
    ]
    if fp.format == "cityscapes":
        choices.append(Choice("data.cityscapes_labels", fp.cityscapes_labels, "the masks found"))
    if fp.reduce_zero_label:
        choices.append(Choice("data.reduce_zero_label", True, "ADE20K stores 0 = other"))
    return choices


def classes(fp: Fingerprint) -> list[Choice]:
    """Class count and ignore label from the class list (classes.txt) or the mask values."""
    if fp.class_source.endswith("classes.txt"):
        names_why = f"training reads the {fp.num_classes} names from {fp.class_source}"
    elif fp.class_source.startswith("the ") and fp.format != "folder":
        names_why = f"training uses {fp.class_source}"
    else:
        names_why = "no classes.txt beside the data: training names them class_<i> (add one)"
    return [
        Choice("data.num_classes", fp.num_classes, f"from {fp.class_source}"),
        Choice("data.class_names", [], names_why),
        Choice(
            "data.ignore_index", fp.ignore_index,
            f"{fp.class_table(fp.train_split)['ignore']} training pixels hold it; "
            "it must not be a class id",
        ),
    ]  # fmt: skip


def channels(fp: Fingerprint) -> list[Choice]:
    """Input channels: those of most training images."""
    counts = [record.channels for record in fp.train.records]
    common = max(set(counts), key=counts.count)
    return [Choice("data.in_channels", common, f"{counts.count(common)} of {len(counts)} images")]


def scaling(fp: Fingerprint) -> list[Choice]:
    """Dtype scaling for images that fill their range (or floats in [0, 1]), else percentiles.

    Percentiles are each image's own 1st and 99.8th per channel (CSBDeep's normalisation).
    """
    totals = fp.train.main_intensity()
    dtype = _main_dtype(fp)
    percentiles = Choice("data.percentiles", list(fp.percentiles), "CSBDeep's usual 1st / 99.8th")
    if dtype.kind == "f":
        low, high = float(totals.minimum.min()), float(totals.maximum.max())
        if low >= 0.0 and high <= 1.0:
            return [
                Choice("data.scaling", "dtype", f"{dtype} pixels already in [0, 1]"),
                percentiles,
            ]
        why = f"{dtype} pixels span [{low:.4g}, {high:.4g}]: no dtype maximum to divide by"
        return [Choice("data.scaling", "percentile", why), percentiles]
    values = totals.bin_values
    high = [
        histogram_percentiles(values, counts, [fp.percentiles[1]])[0] for counts in totals.histogram
    ]
    use = max(high) / dtype_max(dtype)
    tops = np.stack([record.bounds[1] for record in fp.train.records])
    drift = float(np.max(tops.std(0) / np.maximum(np.abs(tops.mean(0)), 1e-12)))
    if use >= RANGE_USE_FOR_DTYPE:
        why = (
            f"{dtype}: the {fp.percentiles[1]}th percentile reaches {use:.0%} of the range, so "
            "dividing by the dtype max keeps images comparable (the photo convention)"
        )
        return [Choice("data.scaling", "dtype", why), percentiles]
    why = (
        f"{dtype}: the {fp.percentiles[1]}th percentile reaches only {use:.1%} of the range; "
        f"per-image percentiles also remove brightness drift (their top varies by {drift:.0%})"
    )
    return [Choice("data.scaling", "percentile", why), percentiles]


def normalisation(fp: Fingerprint, scaling_mode: str) -> list[Choice]:
    """Mean and std of the training pixels after `scaling_mode`, so inputs are about N(0, 1)."""
    mean, std = fp.train.main_intensity().mean_std(scaling_mode)
    flat = [index for index, value in enumerate(std) if value <= 1e-12]
    std = np.where(std > 1e-12, std, 1.0)
    why = f"training pixels after data.scaling={scaling_mode}"
    why += f"; channel(s) {flat} are constant: std set to 1" if flat else ""
    return [
        Choice("data.mean", [round(float(v), 6) for v in mean], why),
        Choice("data.std", [round(float(v), 6) for v in std], why),
    ]


def shrink_crop(crop: tuple[int, int], median: tuple[int, int], max_area: float) -> tuple[int, int]:
    """`crop` made smaller by STRIDE steps until its area is at most `max_area`.

    As nnU-Net does, each step shortens the side that is longest relative to the median image
    size, so the crop keeps the images' aspect; no side goes below MIN_CROP_SIDE (or below
    where it started).
    """
    height, width = crop
    floor_h, floor_w = min(MIN_CROP_SIDE, height), min(MIN_CROP_SIDE, width)
    while height * width > max_area and (height > floor_h or width > floor_w):
        shrink_height = height / median[0] >= width / median[1]
        if (shrink_height and height > floor_h) or width <= floor_w:
            height -= STRIDE
        else:
            width -= STRIDE
    return height, width


def crop_and_batch(fp: Fingerprint) -> list[Choice]:
    """Batch 8, `repeat` so an epoch holds a batch, a crop from the median image size.

    The crop shrinks (`shrink_crop`) until a batch covers at most 5 % of the training pixels,
    nnU-Net's cap against batches that see much of a small dataset at once.
    """
    median = median_size(fp)
    start = tuple(max(STRIDE, side // STRIDE * STRIDE) for side in median)
    train_pixels = sum(r.height * r.width for r in fp.train.records)
    max_area = MAX_BATCH_SHARE * train_pixels / BATCH_SIZE
    crop = shrink_crop(start, median, max_area)
    repeat = max(1, math.ceil(BATCH_SIZE / len(fp.train.records)))
    capped = "" if crop == start else f", shrunk so a batch covers <= 5 % of {train_pixels} px"
    return [
        Choice("data.batch_size", BATCH_SIZE,
               "BatchNorm needs a few samples per batch; the size of the project's recipes"),
        Choice("data.repeat", repeat,
               f"{len(fp.train.records)} training images: an epoch must hold a full batch"),
        Choice("data.crop_size", list(crop),
               f"median image {median[0]}x{median[1]} rounded to multiples of {STRIDE}{capped}"),
    ]  # fmt: skip


def _mirror_breakers(fp: Fingerprint, axis: int) -> list[str]:
    """Why mirroring along `axis` (0 = left/right, 1 = up/down) would make unreal images."""
    table = fp.class_table(fp.train_split)
    share = table["pixels"] / max(int(table["pixels"].sum()), 1)
    centre = table["col" if axis == 0 else "row"]
    extent = "width" if axis == 0 else "height"
    reasons = [
        f"class {fp.class_names[c]!r} is centred at {centre[c]:.2f} of the {extent}"
        for c in range(fp.num_classes)
        if share[c] >= LAYOUT_MIN_SHARE and abs(centre[c] - 0.5) > LAYOUT_OFFSET
    ]  # fmt: skip
    records = fp.train.records
    if len(records) >= SKEW_MIN_IMAGES:
        skews = np.stack([record.gradient_skew[axis] for record in records])
        for channel in range(skews.shape[1]):
            median = float(np.median(skews[:, channel]))
            same_sign = float(np.mean(np.sign(skews[:, channel]) == np.sign(median)))
            if same_sign >= SKEW_SIGN_SHARE and abs(median) >= SKEW_MIN_MEDIAN:
                reasons.append(
                    f"channel {channel} is lit from one side (gradient skewness {median:+.2f} "
                    f"with one sign in {same_sign:.0%} of images)"
                )
    return reasons


def flips(fp: Fingerprint) -> list[Choice]:
    """Mirror only along axes where mirrored images look like real ones (`_mirror_breakers`).

    Turns by 90° need both mirrors safe and alike gradients along x and y; validation is
    averaged with the mirror image when left/right mirroring is safe.
    """
    breakers = [_mirror_breakers(fp, axis) for axis in (0, 1)]
    safe = "mirrored images look like real ones: classes centred, gradients symmetric"
    hflip = 0.0 if breakers[0] else 0.5
    vflip = 0.0 if breakers[1] else 0.5
    variances = np.stack([record.gradient_var for record in fp.train.records])
    ratio = np.median(variances[:, 0] / np.maximum(variances[:, 1], 1e-300), axis=0)
    isotropic = bool(np.all((ratio <= ISOTROPY) & (ratio >= 1 / ISOTROPY)))
    turn = 0.5 if hflip and vflip and isotropic else 0.0
    turn_why = ("both mirrors safe and gradients alike along x and y" if turn else
                "needs both mirrors safe and x/y gradient variances within 25 % (ratio "
                + ", ".join(f"{value:.2f}" for value in ratio) + ")")  # fmt: skip
    return [
        Choice("data.hflip", hflip, "; ".join(breakers[0]) or safe),
        Choice("data.vflip", vflip, "; ".join(breakers[1]) or safe),
        Choice("data.rotate90", turn, turn_why),
        Choice("eval.flip", bool(hflip), "average each validation image with its mirror image: "
               "+0.0 to +1.3 mIoU on five sets of the development suite (docs/PLANNING.md)"
               if hflip else "mirrored images are unlike real ones (see data.hflip)"),
    ]  # fmt: skip


def augmentation(fp: Fingerprint, scaling_mode: str) -> list[Choice]:
    """No random rescaling and no photometric jitter, photographs included."""
    photo = _main_dtype(fp) == np.uint8 and scaling_mode == "dtype" and channels(fp)[0].value == 3
    scale_why = (
        "8-bit RGB, yet no rescaling: [0.5, 2] (mmseg's recipe for photographs) cost 3.2 mIoU "
        "on the development suite's textured RGB set at the budget tested (docs/PLANNING.md); "
        "consider it for long runs on photographs"
        if photo
        else "not 8-bit RGB photos: one pixel size, so rescaled objects would never occur"
    )
    return [
        Choice("data.scale_range", [1.0, 1.0], scale_why),
        Choice("data.photometric", 0.0, "no gain in the project's studies (docs/BENCHMARKS.md)"),
    ]


def loading(fp: Fingerprint) -> list[Choice]:
    """Cache decoded images in RAM when train + val are small; otherwise decode in workers."""
    records = fp.train.records + (fp.val.records if fp.val is not fp.train else [])
    decoded = sum(r.height * r.width * r.channels * np.dtype(r.dtype).itemsize for r in records)
    if decoded <= CACHE_BYTES:
        why = f"{decoded / 2**20:.0f} MiB decoded: read once, crop from RAM"
        return [Choice("data.cache", True, why), Choice("data.num_workers", 0, why)]
    why = f"{decoded / 2**30:.1f} GiB decoded: too much to keep; decode in worker processes"
    return [Choice("data.cache", False, why), Choice("data.num_workers", 4, why)]


def evaluation(fp: Fingerprint) -> list[Choice]:
    """Whole validation images, one at a time; windows of 1024² for very large images."""
    largest = max((r.height * r.width for r in fp.val.records), default=0)
    choices = [Choice("data.val_batch_size", 1, "validation images are whole, of any size")]
    if largest <= WHOLE_EVAL_PIXELS:
        return choices + [Choice("eval.mode", "whole", f"largest val image {largest} px")]
    window = [EVAL_WINDOW, EVAL_WINDOW]
    why = f"largest val image {largest} px: whole-image activations would need too much memory"
    return choices + [Choice("eval.mode", "slide", why), Choice("eval.crop_size", window, why)]


def rare_class_notes(fp: Fingerprint) -> list[str]:
    """A note for each class that is rare in training: few pixels or few images hold it."""
    table = fp.class_table(fp.train_split)
    total, count = max(int(table["pixels"].sum()), 1), len(fp.train.records)
    notes = []
    for index, name in enumerate(fp.class_names):
        pixels, images = int(table["pixels"][index]), int(table["images"][index])
        if pixels and (pixels / total < RARE_PIXEL_SHARE or images / count < RARE_IMAGE_SHARE):
            notes.append(
                f"class {index} {name!r} is rare in training ({pixels / total:.2%} of the "
                f"labelled pixels, {images} of {count} images): expect a noisy IoU; add "
                "examples if you can"
            )
    return notes
