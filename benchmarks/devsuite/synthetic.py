"""The synthetic sets of the development suite: each draws one (image, mask) pair at a time.

Every ``draw_*`` takes a generator seeded by (suite seed, set, split, index), the image index
within its split and the image size, and returns ``(image, mask)``: uint8 (H×W or H×W×3) or
uint16 H×W pixels, and a uint8 H×W class mask. What each set is meant to stress is in its
`SetSpec.kind` and in data/README.md; tests/test_devsuite.py measures it on the masks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from benchmarks.devsuite import draw
from benchmarks.devsuite.draw import Size

Pair = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class SetSpec:
    """One synthetic set: its classes, default size and split counts, and how to draw a pair."""

    name: str
    kind: str
    classes: tuple[str, ...]
    size: Size
    counts: dict[str, int]
    draw: Callable[[np.random.Generator, int, Size], Pair]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Round and clip a float image to uint8."""
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


# rare: 8 classes in 1-channel 8-bit images of about the size of a held-back dataset
RARE_CLASSES = ("background", "disc", "ellipse", "square", "ring", "bar", "speck", "occasional")
RARE_SPECK, RARE_OCCASIONAL = 6, 7
OCCASIONAL_PERIOD = 8  # the occasional class is in images whose index % 8 == 3
RARE_LEVELS = np.array([70, 112, 124, 136, 148, 160, 190, 150], np.float32)


def _rare_shape(mask: np.ndarray, rng: np.random.Generator, label: int, size: Size) -> None:
    """One object of the common class `label`, at a random place."""
    centre = draw.random_point(rng, size, margin=8)
    if label == 1:
        draw.disc(mask, centre, rng.integers(8, 16), label)
    elif label == 2:
        axes = (int(rng.integers(10, 18)), int(rng.integers(4, 8)))
        draw.ellipse(mask, centre, axes, rng.uniform(0, 180), label)
    elif label == 3:
        draw.square(mask, centre, int(rng.integers(12, 22)), rng.uniform(0, 90), label)
    elif label == 4:
        draw.ring(mask, centre, rng.integers(8, 14), int(rng.integers(3, 5)), label)
    else:
        draw.segment(mask, centre, rng.uniform(20, 40), rng.uniform(0, np.pi), 5, label)


def draw_rare(rng: np.random.Generator, index: int, size: Size) -> Pair:
    """Five common shape classes; `speck` (tiny, < 1 % of pixels) and `occasional` (few images)."""
    mask = np.zeros(size, np.uint8)
    for label in rng.permutation(np.arange(1, 6)):
        for _ in range(int(rng.integers(1, 4))):
            _rare_shape(mask, rng, int(label), size)
    if index % OCCASIONAL_PERIOD == 3:
        centre = draw.random_point(rng, size, margin=16)
        draw.disc(mask, centre, rng.integers(9, 13), RARE_OCCASIONAL)
        draw.disc(mask, centre, 4, 0)  # a hole: the occasional class is a thick ring
    for _ in range(int(rng.integers(1, 4))):
        draw.disc(mask, draw.random_point(rng, size, margin=4), 2, RARE_SPECK)
    image = RARE_LEVELS[mask] + 12 * draw.smooth_noise(rng, size, 24)
    image = draw.blur(image, 0.8) + rng.normal(0, 14, size)
    return _to_uint8(image), mask


# thin: vessels 1-3 px wide among round cells
THIN_CLASSES = ("background", "vessel", "cell")


def draw_thin(rng: np.random.Generator, index: int, size: Size) -> Pair:
    """Meandering vessels 1, 2 or 3 px wide, faint against noise, among brighter round cells."""
    mask = np.zeros(size, np.uint8)
    for _ in range(int(rng.integers(3, 8))):
        draw.disc(mask, draw.random_point(rng, size), rng.integers(6, 12), 2)
    scale = (size[0] + size[1]) / 2
    for _ in range(int(rng.integers(3, 7))):
        points = draw.random_curve(rng, size, steps=int(scale / 3), step=3.0)
        draw.polyline(mask, points, int(rng.integers(1, 4)), 1)
    levels = np.array([90, 130, 150], np.float32)
    image = levels[mask] + 20 * draw.smooth_noise(rng, size, 16)
    image = draw.blur(image, 0.6) + rng.normal(0, 12, size)
    return _to_uint8(image), mask


# many: 20 classes told apart by hue in RGB
MANY_CLASSES = ("background", *(f"hue_{k:02d}" for k in range(1, 20)))


def _hue_colours(count: int) -> np.ndarray:
    """`count` RGB colours of evenly spaced hues (0..1 floats), the background grey first."""
    hsv = np.zeros((1, count - 1, 3), np.uint8)
    hsv[0, :, 0] = np.round(np.arange(count - 1) * 180 / (count - 1)).astype(np.uint8)
    hsv[0, :, 1], hsv[0, :, 2] = 150, 200
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0].astype(np.float32)
    return np.concatenate([[[128, 128, 128]], rgb]).astype(np.float32)


MANY_COLOURS = _hue_colours(len(MANY_CLASSES))


def draw_many(rng: np.random.Generator, index: int, size: Size) -> Pair:
    """8 to 14 objects of 19 hue classes (neighbouring hues about 19° apart) on grey."""
    mask = np.zeros(size, np.uint8)
    for _ in range(int(rng.integers(8, 15))):
        label = int(rng.integers(1, len(MANY_CLASSES)))
        centre = draw.random_point(rng, size, margin=6)
        shape = rng.integers(3)
        if shape == 0:
            draw.disc(mask, centre, rng.integers(7, 16), label)
        elif shape == 1:
            axes = (int(rng.integers(8, 20)), int(rng.integers(5, 10)))
            draw.ellipse(mask, centre, axes, rng.uniform(0, 180), label)
        else:
            draw.square(mask, centre, int(rng.integers(12, 26)), rng.uniform(0, 90), label)
    image = MANY_COLOURS[mask] * rng.uniform(0.85, 1.15)
    image = draw.blur(image, 0.7) + rng.normal(0, 10, (*size, 3))
    return _to_uint8(image), mask


# textured: classes share mean and contrast and differ only in texture
TEXTURE_CLASSES = ("smooth", "stripes", "weave", "speckle", "dots")


def _textures(rng: np.random.Generator, size: Size) -> np.ndarray:
    """The five standardised texture fields of one image, stacked (5, H, W)."""
    angle = rng.uniform(0, np.pi)
    return np.stack(
        [
            draw.smooth_noise(rng, size, 4.0),
            draw.stripes(rng, size, rng.uniform(6, 9), angle),
            draw.checks(rng, size, rng.uniform(7, 10), angle + rng.uniform(0.3, 1.2)),
            draw.standardise(draw.blur(rng.standard_normal(size).astype(np.float32), 0.8)),
            draw.dots(rng, size, spacing=7, radius=1),
        ]
    )


def draw_textured(rng: np.random.Generator, index: int, size: Size) -> Pair:
    """Voronoi regions, each one of five textures of equal mean and std, under one colour tint."""
    regions = draw.voronoi(rng, size, int(rng.integers(6, 13)))
    region_class = rng.integers(0, len(TEXTURE_CLASSES), regions.max() + 1)
    mask = region_class[regions].astype(np.uint8)
    fields = _textures(rng, size)
    texture = np.take_along_axis(fields, mask[None].astype(np.int64), axis=0)[0]
    tint = rng.uniform(0.7, 1.3, 3).astype(np.float32)
    grey = 120 + 40 * texture
    image = grey[..., None] * tint + rng.normal(0, 4, (*size, 3))
    return _to_uint8(image), mask


# large: 1024×1024 with small, sparse objects and larger look-alikes in the background
LARGE_CLASSES = ("background", "spot", "fibre")


def draw_large(rng: np.random.Generator, index: int, size: Size) -> Pair:
    """Spots (radius 3-5) and short fibres (10-20 px) on clutter that includes big bright decoys."""
    area = size[0] * size[1]
    mask = np.zeros(size, np.uint8)
    decoys = np.zeros(size, np.float32)
    for _ in range(max(1, area // 100_000)):
        draw.disc(decoys, draw.random_point(rng, size), rng.integers(20, 40), 1)
    for _ in range(max(1, area // 25_000)):
        draw.disc(mask, draw.random_point(rng, size, margin=6), rng.integers(3, 6), 1)
    for _ in range(max(1, area // 50_000)):
        start = draw.random_point(rng, size, margin=24)
        draw.segment(mask, start, rng.uniform(10, 20), rng.uniform(0, np.pi), 2, 2)
    levels = np.array([80, 150, 140], np.float32)
    image = levels[mask] + 60 * draw.blur(decoys, 3.0) + 10 * draw.smooth_noise(rng, size, 40)
    image = draw.blur(image, 0.7) + rng.normal(0, 3, size)
    return _to_uint8(image), mask


# fluo16: 16-bit, one channel, the gain and offset drifting from image to image
FLUO_CLASSES = ("background", "cell", "nucleus")
FLUO_GAIN_RANGE = (300.0, 6000.0)


def draw_fluo16(rng: np.random.Generator, index: int, size: Size) -> Pair:
    """Cells with bright nuclei; each image has its own gain (20× range) and offset.

    The gain is spread over `FLUO_GAIN_RANGE` (log scale) by the image index, with ±25 %
    jitter, so no fixed scaling fits every image: the case for percentile scaling.
    """
    mask = np.zeros(size, np.uint8)
    for _ in range(int(rng.integers(4, 9))):
        centre = draw.random_point(rng, size, margin=10)
        axes = (int(rng.integers(12, 20)), int(rng.integers(9, 15)))
        angle = rng.uniform(0, 180)
        draw.ellipse(mask, centre, axes, angle, 1)
        draw.ellipse(mask, centre, (axes[0] // 2, axes[1] // 2), angle, 2)
    low, high = np.log(FLUO_GAIN_RANGE)
    gain = np.exp(high - (high - low) * ((index * 0.37) % 1.0)) * rng.uniform(0.8, 1.25)
    offset = rng.uniform(100, 2000)
    signal = np.array([0.02, 0.25, 1.0], np.float32)[mask]
    signal = draw.blur(signal * (1 + 0.3 * draw.smooth_noise(rng, size, 3)).clip(0), 1.0)
    expected = offset + gain * signal
    image = expected + rng.normal(0, 1, size) * np.sqrt(expected + 100)
    return np.clip(np.round(image), 0, 65535).astype(np.uint16), mask


SYNTHETIC: dict[str, SetSpec] = {
    spec.name: spec
    for spec in (
        SetSpec("rare", "1-channel 8-bit; one class < 1 % of pixels, one in 1 image of 8",
                RARE_CLASSES, (176, 208), {"train": 114, "val": 24}, draw_rare),
        SetSpec("thin", "1-channel 8-bit; vessels 1-3 px wide, faint, among cells",
                THIN_CLASSES, (256, 256), {"train": 40, "val": 20}, draw_thin),
        SetSpec("many", "RGB 8-bit; 20 classes told apart by hue alone",
                MANY_CLASSES, (128, 128), {"train": 100, "val": 30}, draw_many),
        SetSpec("textured", "RGB 8-bit; 5 classes of equal brightness told apart by texture",
                TEXTURE_CLASSES, (160, 160), {"train": 60, "val": 20}, draw_textured),
        SetSpec("large", "1-channel 8-bit 1024×1024; small sparse objects, big decoys",
                LARGE_CLASSES, (1024, 1024), {"train": 6, "val": 4}, draw_large),
        SetSpec("fluo16", "1-channel 16-bit; gain drifts 20× and offset between images",
                FLUO_CLASSES, (192, 192), {"train": 40, "val": 20}, draw_fluo16),
    )
}  # fmt: skip
