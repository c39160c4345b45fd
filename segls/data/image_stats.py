"""Per-image summaries a dataset fingerprint adds up: histograms, moments, gradients, a hash.

Every function here looks at one image (or mask) and returns a few numbers per channel, so a
fingerprint keeps nothing per pixel. Histograms are exact for 8- and 16-bit integers (one
bin per value); other dtypes are binned by their float16 rounding (65 536 bins covering
±65 504 with three significant digits), so one fixed set of bins serves every image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from segls.data.readers import dtype_max
from segls.data.transforms import percentile_bounds, scale_by_bounds

EXACT_KEYS = (np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.uint16), np.dtype(np.int16))
HASH_ROWS = 16  # difference hash: 16 rows x 16 left/right comparisons = 256 bits


def histogram_key(dtype: np.dtype) -> np.dtype:
    """The dtype whose bit patterns index the histogram bins: float16 unless 8/16-bit int."""
    dtype = np.dtype(dtype)
    if dtype == np.dtype(bool):
        return np.dtype(np.uint8)
    return dtype if dtype in EXACT_KEYS else np.dtype(np.float16)


def bin_values(key: np.dtype) -> np.ndarray:
    """The value (float64) of each histogram bin of `key`, in bin order; NaN for NaN patterns."""
    key = np.dtype(key)
    unsigned = np.dtype(f"u{key.itemsize}")
    return np.arange(2 ** (8 * key.itemsize), dtype=unsigned).view(key).astype(np.float64)


def channel_histograms(image: np.ndarray, key: np.dtype) -> np.ndarray:
    """C × bins pixel counts of an H×W×C image, binned by `key` (see `histogram_key`)."""
    key = np.dtype(key)
    unsigned = np.dtype(f"u{key.itemsize}")
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float16's range: ±inf bins
        keys = image.astype(key).view(unsigned)
    bins = 2 ** (8 * key.itemsize)
    return np.stack(
        [np.bincount(keys[..., c].ravel(), minlength=bins) for c in range(image.shape[-1])]
    )


def histogram_percentiles(values: np.ndarray, counts: np.ndarray, qs: list[float]) -> np.ndarray:
    """``np.percentile(pixels, qs)`` (linear method) of the pixels a histogram counts, no NaN."""
    keep = (counts > 0) & ~np.isnan(values)
    if not keep.any():
        return np.full(len(qs), np.nan)
    order = np.argsort(values[keep], kind="stable")
    sorted_values = values[keep][order]
    cumulative = np.cumsum(counts[keep][order])
    position = np.asarray(qs, dtype=np.float64) / 100.0 * (cumulative[-1] - 1)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, cumulative[-1] - 1)
    low_value = sorted_values[np.searchsorted(cumulative, lower, side="right")]
    high_value = sorted_values[np.searchsorted(cumulative, upper, side="right")]
    return low_value + (position - lower) * (high_value - low_value)


def gradient_moments(scaled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(skewness, variance), each 2 × C, of the differences of neighbouring pixels along x then y.

    A flip along an axis negates that axis's differences, so images whose statistics do not
    change under the flip have zero skewness there; light falling from one side does not.
    """
    skew, variance = np.zeros((2, scaled.shape[-1])), np.zeros((2, scaled.shape[-1]))
    for axis_index, axis in enumerate((1, 0)):
        if scaled.shape[axis] < 2:
            continue
        steps = np.diff(scaled, axis=axis).reshape(-1, scaled.shape[-1]).astype(np.float64)
        centred = steps - steps.mean(axis=0)
        second = np.mean(centred**2, axis=0)
        third = np.mean(centred**3, axis=0)
        variance[axis_index] = second
        np.divide(third, second**1.5, out=skew[axis_index], where=second > 0)
    return skew, variance


def difference_hash(scaled: np.ndarray) -> np.ndarray:
    """A 256-bit difference hash (32 bytes) of an image scaled to about [0, 1], channels averaged.

    The image shrinks to 16 × 17 pixels and each bit says whether a pixel is brighter than
    its left neighbour: re-encoding, resizing or a brightness change leave it nearly intact.
    """
    grey = np.ascontiguousarray(scaled.mean(axis=-1), dtype=np.float32)
    small = cv2.resize(grey, (HASH_ROWS + 1, HASH_ROWS), interpolation=cv2.INTER_AREA)
    return np.packbits(small[:, 1:] > small[:, :-1])


def hamming_distances(hashes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """N × M counts of differing bits between stacks of packed hashes (N × B and M × B bytes)."""
    if len(hashes) == 0 or len(others) == 0:
        return np.zeros((len(hashes), len(others)), dtype=np.int64)
    differing = np.bitwise_xor(hashes[:, None, :], others[None, :, :])
    return np.unpackbits(differing, axis=-1).sum(axis=-1, dtype=np.int64)


@dataclass
class ImageSummary:
    """What a fingerprint keeps of one image: per-channel numbers, no pixels."""

    height: int
    width: int
    channels: int
    dtype: str
    key: str
    finite: bool
    histogram: np.ndarray  # C × bins, binned by `key`
    minimum: np.ndarray  # C
    maximum: np.ndarray  # C
    dtype_sums: np.ndarray  # 2 × C: sum and sum of squares after dividing by the dtype max
    percentile_sums: np.ndarray  # 2 × C: the same after scaling by the image's own percentiles
    bounds: np.ndarray  # 2 × C: the image's percentiles, as `data.scaling: percentile` uses them
    gradient_skew: np.ndarray  # 2 × C (x, y)
    gradient_var: np.ndarray  # 2 × C (x, y)
    digest: np.ndarray  # 32 bytes, `difference_hash`


def unit_scaled(image: np.ndarray, bounds: np.ndarray | None = None) -> np.ndarray:
    """An H×W×C image scaled as ``data.scaling`` does: by the dtype max, or by `bounds` (2 × C).

    `bounds` are an image's percentiles, as `segls.data.transforms.scale_by_bounds` takes them.
    """
    if bounds is None:
        return image.astype(np.float64) / dtype_max(image.dtype)
    return scale_by_bounds(image, bounds)


def moment_sums(scaled: np.ndarray) -> np.ndarray:
    """2 × C: per-channel sum and sum of squares of an H×W×C image, in float64."""
    pixels = scaled.reshape(-1, scaled.shape[-1])
    return np.stack([pixels.sum(0, dtype=np.float64), np.square(pixels, dtype=np.float64).sum(0)])


def summarise_image(image: np.ndarray, percentiles: list[float]) -> ImageSummary:
    """The `ImageSummary` of an H×W×C image in its stored dtype (as `read_image` returns it)."""
    height, width, channels = image.shape
    key = histogram_key(image.dtype)
    finite = bool(np.isfinite(image).all()) if image.dtype.kind == "f" else True
    numeric = image.astype(np.uint8) if image.dtype == np.dtype(bool) else image
    pixels = numeric.reshape(-1, channels)
    zeros = np.zeros((2, channels))
    if finite:
        dtype_sums = moment_sums(unit_scaled(numeric))
        bounds = percentile_bounds(numeric, percentiles)
        scaled = unit_scaled(numeric, bounds)
        percentile_sums = moment_sums(scaled)
        skew, variance = gradient_moments(scaled)
        digest = difference_hash(scaled)
    else:
        dtype_sums, percentile_sums, bounds = zeros, zeros, zeros
        skew, variance, digest = zeros, zeros, np.zeros(HASH_ROWS * HASH_ROWS // 8, np.uint8)
    return ImageSummary(
        height, width, channels, str(image.dtype), str(key), finite,
        channel_histograms(numeric, key), np.nanmin(pixels, axis=0).astype(np.float64),
        np.nanmax(pixels, axis=0).astype(np.float64), dtype_sums, percentile_sums,
        np.asarray(bounds, dtype=np.float64), skew, variance, digest,
    )  # fmt: skip


def summarise_mask(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(values, pixel counts, sums of row positions, sums of column positions) of an H×W mask.

    Positions are in units of the mask's size, (row + 0.5) / H and (column + 0.5) / W, so
    a value's sum divided by its count is its mean position in [0, 1] whatever the size.
    """
    height, width = mask.shape
    flat = mask.ravel()
    if mask.dtype in (np.uint8, np.uint16):
        ids = flat
        values = np.flatnonzero(np.bincount(ids))
    else:
        values, ids = np.unique(flat, return_inverse=True)
        ids = ids.ravel()
    rows = np.repeat((np.arange(height) + 0.5) / height, width)
    cols = np.tile((np.arange(width) + 0.5) / width, height)
    counts = np.bincount(ids)
    row_sums = np.bincount(ids, weights=rows)
    col_sums = np.bincount(ids, weights=cols)
    if mask.dtype in (np.uint8, np.uint16):
        counts, row_sums, col_sums = counts[values], row_sums[values], col_sums[values]
    return values.astype(np.int64), counts.astype(np.int64), row_sums, col_sums
