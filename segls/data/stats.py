"""Dataset statistics: the per-channel mean and std that ``data.mean``/``data.std`` hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segls.data.image_stats import moment_sums, unit_scaled
from segls.data.readers import read_image
from segls.data.transforms import percentile_bounds

__all__ = ["channel_stats"]


def channel_stats(
    root: str | Path, split: str = "train", percentiles: list[float] | None = None
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a split's images after scaling them to about [0, 1].

    Scaling as ``data.scaling`` does it: by the dtype max, or with `percentiles` by each
    image's own per-channel ``[low, high]`` percentiles (`segls.data.transforms`).
    """
    image_dir = Path(root) / "images" / split
    paths = sorted(image_dir.glob("*.tif"))
    if not paths:
        raise FileNotFoundError(
            f"no .tif images in {image_dir}; run `python tools/prepare_sample.py` first"
        )
    sums, count = 0.0, 0
    for path in paths:
        image = read_image(path)
        bounds = None if percentiles is None else percentile_bounds(image, percentiles)
        sums = sums + moment_sums(unit_scaled(image, bounds))
        count += image.shape[0] * image.shape[1]
    mean = sums[0] / count
    std = np.sqrt(np.maximum(sums[1] / count - mean**2, 0.0))
    return [float(v) for v in mean], [float(v) for v in std]
