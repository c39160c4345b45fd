"""Dataset statistics: the per-channel mean and std that ``data.mean``/``data.std`` hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from segls.data.transforms import percentile_bounds, scale_by_bounds

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
    total = total_sq = None
    count = 0
    for path in paths:
        image = tifffile.imread(path)
        if percentiles is None:
            pixels = image.reshape(-1, image.shape[-1]).astype(np.float64)
            pixels /= np.iinfo(image.dtype).max
        else:
            scaled = scale_by_bounds(image, percentile_bounds(image, percentiles))
            pixels = scaled.reshape(-1, image.shape[-1]).astype(np.float64)
        total = pixels.sum(0) if total is None else total + pixels.sum(0)
        total_sq = (pixels**2).sum(0) if total_sq is None else total_sq + (pixels**2).sum(0)
        count += pixels.shape[0]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return [float(v) for v in mean], [float(v) for v in std]
