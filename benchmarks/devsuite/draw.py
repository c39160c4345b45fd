"""Drawing primitives for the synthetic sets: shapes into masks, noise fields, textures, curves.

Masks are drawn with OpenCV's 8-connected, non-antialiased fills, so a pixel holds exactly one
class; images are float fields rendered from the mask and quantised by the generator.
"""

from __future__ import annotations

import cv2
import numpy as np

Size = tuple[int, int]  # (height, width)


def smooth_noise(rng: np.random.Generator, size: Size, sigma: float) -> np.ndarray:
    """White noise blurred by a Gaussian of `sigma` pixels, rescaled to mean 0 and std 1.

    Wide blurs are made on a grid `sigma / 4` times coarser and resized up: the same field
    for the eye, at a fraction of the cost on 1024×1024 images.
    """
    factor = max(1, int(sigma // 4))
    coarse = (-(-size[0] // factor), -(-size[1] // factor))
    field = rng.standard_normal(coarse).astype(np.float32)
    field = cv2.GaussianBlur(field, (0, 0), sigmaX=sigma / factor, borderType=cv2.BORDER_REFLECT)
    if factor > 1:
        field = cv2.resize(field, (coarse[1] * factor, coarse[0] * factor), cv2.INTER_CUBIC)
        field = field[: size[0], : size[1]]
    return standardise(field)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (per channel), the optics that soften every object's edge."""
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)


def random_point(rng: np.random.Generator, size: Size, margin: int = 0) -> tuple[int, int]:
    """(x, y) of a pixel at least `margin` from the border."""
    height, width = size
    return (
        int(rng.integers(margin, max(width - margin, margin + 1))),
        int(rng.integers(margin, max(height - margin, margin + 1))),
    )


def disc(mask: np.ndarray, centre: tuple[int, int], radius: int, value: int) -> None:
    """Fill a disc."""
    cv2.circle(mask, centre, int(radius), int(value), thickness=-1, lineType=cv2.LINE_8)


def ring(mask: np.ndarray, centre: tuple[int, int], radius: int, width: int, value: int) -> None:
    """Draw an annulus `width` pixels wide."""
    cv2.circle(mask, centre, int(radius), int(value), thickness=int(width), lineType=cv2.LINE_8)


def ellipse(
    mask: np.ndarray, centre: tuple[int, int], axes: tuple[int, int], angle: float, value: int
) -> None:
    """Fill an ellipse with half-axes `axes` turned by `angle` degrees."""
    axes = (int(axes[0]), int(axes[1]))
    cv2.ellipse(mask, centre, axes, float(angle), 0, 360, int(value), -1, cv2.LINE_8)


def square(mask: np.ndarray, centre: tuple[int, int], side: int, angle: float, value: int) -> None:
    """Fill a square of `side` pixels turned by `angle` degrees."""
    corners = cv2.boxPoints(((float(centre[0]), float(centre[1])), (side, side), float(angle)))
    cv2.fillPoly(mask, [np.round(corners).astype(np.int32)], int(value), lineType=cv2.LINE_8)


def _widened(mask: np.ndarray, points: np.ndarray, width: int, value: int) -> None:
    """Draw the 1-px polyline through `points`, widened to `width` px by a square dilation.

    OpenCV's own thick lines are wider than asked (thickness 2 draws 3 px, 3 draws 5), and
    the thin set must know its widths.
    """
    line = np.zeros(mask.shape[:2], np.uint8)
    cv2.polylines(line, [points], False, 1, thickness=1, lineType=cv2.LINE_8)
    if width > 1:
        line = cv2.dilate(line, np.ones((int(width), int(width)), np.uint8))
    mask[line > 0] = value


def segment(
    mask: np.ndarray, start: tuple[int, int], length: float, angle: float, width: int, value: int
) -> None:
    """Draw a straight bar of `length` and `width` pixels from `start` at `angle` radians."""
    end = (start[0] + length * np.cos(angle), start[1] + length * np.sin(angle))
    points = np.round(np.array([start, end])).astype(np.int32)
    _widened(mask, points, width, value)


def random_curve(
    rng: np.random.Generator, size: Size, steps: int, step: float = 3.0, bend: float = 0.12
) -> np.ndarray:
    """Points of a smooth random walk (a vessel or a fibre) as int32 (N, 2) x, y for cv2.

    The heading turns by a turn rate that itself drifts, so curves meander without kinks.
    """
    x, y = (float(v) for v in random_point(rng, size))
    heading = rng.uniform(0, 2 * np.pi)
    turn = 0.0
    points = [(x, y)]
    for _ in range(steps):
        turn = 0.8 * turn + rng.normal(0, bend)
        heading += turn
        x, y = x + step * np.cos(heading), y + step * np.sin(heading)
        points.append((x, y))
    return np.round(np.array(points)).astype(np.int32)


def polyline(mask: np.ndarray, points: np.ndarray, width: int, value: int) -> None:
    """Draw an open polyline `width` pixels wide."""
    _widened(mask, points, width, value)


def voronoi(rng: np.random.Generator, size: Size, regions: int) -> np.ndarray:
    """Index (0..regions-1) of the nearest of `regions` random seed points, per pixel."""
    height, width = size
    seeds_y = rng.uniform(0, height, regions)
    seeds_x = rng.uniform(0, width, regions)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    distances = (rows[None] - seeds_y[:, None, None]) ** 2 + (
        cols[None] - seeds_x[:, None, None]
    ) ** 2
    return np.argmin(distances, axis=0)


def standardise(field: np.ndarray) -> np.ndarray:
    """`field` with mean 0 and std 1, so textures differ in pattern, not in brightness."""
    return (field - field.mean()) / max(float(field.std()), 1e-6)


def stripes(rng: np.random.Generator, size: Size, period: float, angle: float) -> np.ndarray:
    """A sinusoidal grating of `period` pixels at `angle` radians, standardised."""
    rows, cols = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    along = cols * np.cos(angle) + rows * np.sin(angle)
    return standardise(np.sin(2 * np.pi * along / period + phase))


def checks(rng: np.random.Generator, size: Size, period: float, angle: float) -> np.ndarray:
    """The product of two crossed gratings (a checkerboard-like weave), standardised."""
    return standardise(
        stripes(rng, size, period, angle) * stripes(rng, size, period, angle + np.pi / 2)
    )


def dots(rng: np.random.Generator, size: Size, spacing: int, radius: int) -> np.ndarray:
    """Sparse round dots scattered at about `spacing` pixels, standardised."""
    field = np.zeros(size, np.float32)
    count = max(1, size[0] * size[1] // (spacing * spacing))
    for _ in range(count):
        disc(field, random_point(rng, size), radius, 1)
    return standardise(blur(field, 0.6))
