"""Training and validation pipelines: albumentations geometry, then our own float32 photometry.

Geometry (scale, rotate, pad, crop, flip) runs in albumentations on the stored dtype, so
8-bit, 16-bit and float images with any channel count work, and masks are always resized
with nearest neighbour. Scaling to about [0, 1], brightness/contrast jitter and mean/std
normalisation are done here in float32 because they must treat every channel and bit depth
alike. Scaling is either by the dtype max (``data.scaling: dtype``, the usual choice for
photographs) or by each image's own low and high percentiles per channel
(``data.scaling: percentile``, the usual choice in fluorescence microscopy, where stains
fade and exposure drifts from image to image). Percentiles are taken over the whole image
before any crop, so every crop of an image is scaled alike, in training and in inference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import albumentations as A
import cv2
import numpy as np
import torch

from segls.data.readers import dtype_max

if TYPE_CHECKING:
    from segls.config import DataConfig


class ClassCrop(A.RandomCrop):
    """A random crop that, with probability `class_prob`, holds a pixel of a chosen class.

    The class is drawn uniformly from those present in the (scaled, turned, padded) mask,
    the ignore label aside; a pixel of it is drawn uniformly and the crop placed uniformly
    among the windows that hold that pixel. This is nnU-Net's foreground oversampling
    (a third of its patches hold a foreground voxel of a random class present), applied to
    every class: a class in a small corner of few images is otherwise in few crops. Other
    crops are plain random ones. The random draws use albumentations' stream, so
    ``Compose.set_random_seed`` repeats them.
    """

    def __init__(self, height: int, width: int, class_prob: float, ignore_index: int) -> None:
        super().__init__(height=height, width=width)
        self.class_prob = float(class_prob)
        self.ignore_index = int(ignore_index)

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        """Crop coordinates: centred on a chosen class's pixel, or plain random."""
        mask = data.get("mask")
        if mask is None or self.py_random.random() >= self.class_prob:
            return super().get_params_dependent_on_data(params, data)
        if self.height > mask.shape[0] or self.width > mask.shape[1]:  # RandomCrop says why
            return super().get_params_dependent_on_data(params, data)
        counts = np.bincount(mask.ravel(), minlength=self.ignore_index + 1)
        if self.ignore_index < counts.size:
            counts[self.ignore_index] = 0
        present = np.flatnonzero(counts)
        if present.size == 0:
            return super().get_params_dependent_on_data(params, data)
        chosen = present[int(self.py_random.random() * present.size) % present.size]
        pixels = np.flatnonzero(mask.ravel() == chosen)
        pixel = int(pixels[int(self.py_random.random() * pixels.size) % pixels.size])
        row, col = divmod(pixel, mask.shape[1])
        top = _window_start(row, self.height, mask.shape[0], self.py_random.random())
        left = _window_start(col, self.width, mask.shape[1], self.py_random.random())
        return {
            "crop_coords": (left, top, left + self.width, top + self.height),
            "pad_params": None,
        }


def _window_start(position: int, window: int, size: int, draw: float) -> int:
    """A start, uniform by `draw` in [0, 1), of a `window` within [0, size) that holds `position`."""
    low, high = max(0, position - window + 1), min(position, size - window)
    return low + min(int(draw * (high - low + 1)), high - low)


BRIGHTNESS_LIMIT = 0.5  # added offset, in units of the channel's own standard deviation
CONTRAST_LIMIT = 0.3  # relative change of each channel's spread around its mean


def build_geometry(data_cfg: DataConfig) -> A.Compose:
    """Random scale, rotate90, pad to the crop (label filled with ignore), crop and flips.

    With ``data.class_crop`` > 0 the crop is a `ClassCrop`."""
    crop_h, crop_w = (int(size) for size in data_cfg.crop_size)
    low, high = (float(factor) for factor in data_cfg.scale_range)
    steps: list[A.BasicTransform] = []
    if (low, high) != (1.0, 1.0):
        steps.append(
            A.RandomScale(
                scale_limit=(low - 1.0, high - 1.0),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                p=1.0,
            )
        )
    if data_cfg.rotate90 > 0:
        steps.append(A.RandomRotate90(p=data_cfg.rotate90))
    steps += [
        A.PadIfNeeded(
            min_height=crop_h,
            min_width=crop_w,
            position="top_left",
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=data_cfg.ignore_index,
        ),
        A.RandomCrop(height=crop_h, width=crop_w)
        if data_cfg.class_crop <= 0
        else ClassCrop(crop_h, crop_w, data_cfg.class_crop, data_cfg.ignore_index),
    ]
    if data_cfg.hflip > 0:
        steps.append(A.HorizontalFlip(p=data_cfg.hflip))
    if data_cfg.vflip > 0:
        steps.append(A.VerticalFlip(p=data_cfg.vflip))
    return A.Compose(steps, mask_interpolation=cv2.INTER_NEAREST)


def jitter_brightness_contrast(
    image: np.ndarray, rng: np.random.Generator, clip: bool = True
) -> np.ndarray:
    """Per channel, a random contrast around its mean and a brightness offset, on float data.

    Both are relative to the channel's own statistics, not to the [0, 1] range: a 16-bit
    microscopy channel that spans 0.4 % of the range would be drowned by an offset of a
    fixed fraction of the range, which is the usual RGB recipe.
    """
    channels = image.shape[-1]
    contrast = 1.0 + rng.uniform(-CONTRAST_LIMIT, CONTRAST_LIMIT, size=channels)
    brightness = rng.uniform(-BRIGHTNESS_LIMIT, BRIGHTNESS_LIMIT, size=channels)
    centre = image.mean(axis=(0, 1))
    spread = image.std(axis=(0, 1))
    offset = centre + brightness * spread
    image = (image - centre) * contrast.astype(np.float32) + offset.astype(np.float32)
    return np.clip(image, 0.0, 1.0, out=image) if clip else image


def percentile_bounds(image: np.ndarray, percentiles: list[float]) -> np.ndarray:
    """Per-channel ``[low, high]`` percentiles of an H×W×C (or H×W) image, float32, shape 2×C."""
    pixels = image.reshape(-1, 1 if image.ndim == 2 else image.shape[-1])
    return np.percentile(pixels, percentiles, axis=0).astype(np.float32)


def scale_by_bounds(image: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """``(image - low) / (high - low)`` per channel, float32; a flat channel maps to 0."""
    low, high = bounds
    spread = high - low
    spread = np.where(spread > 0, spread, np.float32(1.0)).astype(np.float32)
    scaled = image.astype(np.float32)  # a copy: scaled in place, one float array at a time
    scaled -= low
    scaled /= spread
    return scaled


class SegTransform:
    """Callable (image H×W×C, label H×W) -> (float32 C×H×W tensor, int64 H×W tensor).

    ``geometry`` may be None (validation: the full image, unchanged). Its random state and
    the photometric one are reset together by :meth:`set_random_seed`. With `percentiles`
    (``[low, high]``) each image is scaled by its own per-channel percentiles instead of by
    the dtype max; callers that see an image many times may compute them once with
    :meth:`bounds` and pass them in.
    """

    def __init__(
        self,
        geometry: A.Compose | None,
        mean: list[float],
        std: list[float],
        photometric: float = 0.0,
        seed: int | None = None,
        percentiles: list[float] | None = None,
    ) -> None:
        if len(mean) != len(std):
            raise ValueError(f"data.mean has {len(mean)} values but data.std has {len(std)}")
        if any(value <= 0 for value in std):
            raise ValueError(f"data.std={list(std)} must be positive")
        self.geometry = geometry
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.photometric = float(photometric)
        self.percentiles = None if percentiles is None else [float(q) for q in percentiles]
        self.set_random_seed(seed)

    def set_random_seed(self, seed: int | None) -> None:
        """Reseed the geometric and photometric random streams (None: fresh entropy)."""
        if self.geometry is not None:
            self.geometry.set_random_seed(seed)
        self.rng = np.random.default_rng(None if seed is None else [seed, 1])

    def bounds(self, image: np.ndarray) -> np.ndarray | None:
        """The image's per-channel percentile bounds (2×C), or None when scaling by dtype max."""
        return None if self.percentiles is None else percentile_bounds(image, self.percentiles)

    def normalise(self, image: np.ndarray, bounds: np.ndarray | None = None) -> np.ndarray:
        """Scale to about [0, 1], jitter if drawn, then subtract mean, divide std.

        Scaling divides by the dtype max, or with percentile scaling maps `bounds` (the whole
        image's, see :meth:`bounds`; `image` may be a crop of it) to 0 and 1.
        """
        if image.shape[-1] != self.mean.size:
            raise ValueError(
                f"image has {image.shape[-1]} channels but data.mean/std have {self.mean.size} "
                "values; give one mean and std per channel"
            )
        if self.percentiles is None:
            scaled = image.astype(np.float32)  # a copy, scaled in place like the rest
            scaled /= np.float32(dtype_max(image.dtype))
            clip = np.issubdtype(image.dtype, np.integer)
        else:
            if bounds is None:
                raise ValueError(
                    "percentile scaling needs the whole image's bounds (SegTransform.bounds); "
                    "a crop's own percentiles would scale each crop differently"
                )
            scaled = scale_by_bounds(image, bounds)
            clip = False  # values below and above the percentiles are real signal
        if self.photometric > 0 and self.rng.random() < self.photometric:
            scaled = jitter_brightness_contrast(scaled, self.rng, clip=clip)
        scaled -= self.mean
        scaled /= self.std
        return scaled

    def __call__(
        self,
        image: np.ndarray,
        label: np.ndarray | None = None,
        bounds: np.ndarray | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if bounds is None:
            bounds = self.bounds(image)  # of the whole image, before any crop
        if self.geometry is not None:
            if label is None:
                raise ValueError("training transforms need a label to crop alongside the image")
            out = self.geometry(image=image, mask=label)
            image, label = out["image"], out["mask"]
        if image.ndim == 2:
            image = image[:, :, None]
        image_tensor = torch.from_numpy(
            np.ascontiguousarray(self.normalise(image, bounds).transpose(2, 0, 1))
        )
        if label is None:
            return image_tensor, None
        return image_tensor, torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))


class NormalisedImage:
    """A stored image for inference, normalised a region at a time as `SegTransform` does whole.

    ``image[:, rows, cols]`` (basic slices) is that region's normalised C×h×w float32 tensor,
    equal value for value to the region of ``transform(raw)[0]``: once the percentile bounds
    are taken over the whole stored image, normalising is per pixel. So a huge image is held
    in its stored dtype (1 or 2 bytes a value for 8- and 16-bit images), not as 4-byte floats.
    """

    def __init__(self, raw: np.ndarray, transform: SegTransform) -> None:
        if transform.geometry is not None or transform.photometric > 0:
            raise ValueError("NormalisedImage needs a validation transform (no geometry, jitter)")
        self.raw = raw if raw.ndim == 3 else raw[:, :, None]
        self.transform = transform
        self.bounds = transform.bounds(raw)
        height, width, channels = self.raw.shape
        self.shape = torch.Size((channels, height, width))
        self.ndim = 3

    def __getitem__(self, index: tuple[slice, ...]) -> torch.Tensor:
        """The normalised C×h×w region ``[:, rows, cols]`` (or ``[:, rows]``: whole rows)."""
        channels, rows, cols = (*index, slice(None))[:3]
        if channels not in (slice(None), Ellipsis):
            raise IndexError("a NormalisedImage gives all channels: index it [:, rows, cols]")
        region = self.transform.normalise(self.raw[rows, cols], self.bounds)
        return torch.from_numpy(np.ascontiguousarray(region.transpose(2, 0, 1)))

    def is_finite(self, band_rows: int = 256) -> bool:
        """Whether every normalised value is finite, checked `band_rows` rows at a time."""
        bands = range(0, self.shape[1], band_rows)
        return all(bool(torch.isfinite(self[:, top : top + band_rows]).all()) for top in bands)


def build_transform(data_cfg: DataConfig, train: bool, seed: int | None = None) -> SegTransform:
    """Training pipeline (random geometry + jitter) or validation pipeline (normalise only)."""
    if len(data_cfg.mean) != data_cfg.in_channels:
        raise ValueError(
            f"data.mean has {len(data_cfg.mean)} values but data.in_channels="
            f"{data_cfg.in_channels}; give one mean and std per input channel"
        )
    percentiles = data_cfg.percentiles if data_cfg.scaling == "percentile" else None
    if train:
        geometry, photometric = build_geometry(data_cfg), data_cfg.photometric
    else:
        geometry, photometric = None, 0.0
    return SegTransform(
        geometry, data_cfg.mean, data_cfg.std, photometric, seed, percentiles=percentiles
    )
