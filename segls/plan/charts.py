"""The report's pictures: class frequencies and intensity histograms (`segls.predict.plots`)."""

from __future__ import annotations

import numpy as np
import torch

from segls.data.fingerprint import Fingerprint
from segls.data.image_stats import histogram_percentiles
from segls.predict.plots import bar_chart, histogram_panels

HISTOGRAM_BINS = 64
MAX_BARS = 60


def class_frequency_chart(fp: Fingerprint) -> torch.Tensor:
    """Each class's share of the labelled pixels and of the images, train and val side by side."""
    series = {}
    for label, split in (("train", fp.train_split), ("val", fp.val_split)):
        table = fp.class_table(split)
        images = max(len(fp.splits[split].records), 1)
        series[f"{label} pixels"] = table["pixels"] / max(int(table["pixels"].sum()), 1)
        series[f"{label} images"] = table["images"] / images
    order = np.argsort(-series["train pixels"], kind="stable")[:MAX_BARS]
    shown = "" if fp.num_classes <= MAX_BARS else f" ({MAX_BARS} most frequent of {fp.num_classes})"
    return bar_chart(
        [f"{index} {fp.class_names[index]}" for index in order],
        {name: values[order] for name, values in series.items()},
        "share",
        f"class frequency: share of labelled pixels and of images holding the class{shown}",
    )


def intensity_chart(fp: Fingerprint) -> torch.Tensor:
    """Per channel, the training pixels' histogram between their 0.1st and 99.9th percentiles."""
    totals = fp.train.main_intensity()
    values = totals.bin_values
    panels = []
    for channel, counts in enumerate(totals.histogram):
        low, high = histogram_percentiles(values, counts, [0.1, 99.9])
        if not high > low:
            low, high = low - 0.5, high + 0.5
        edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
        finite = ~np.isnan(values)
        binned, _ = np.histogram(values[finite], bins=edges, weights=counts[finite])
        panels.append((f"channel {channel}", edges, binned))
    return histogram_panels(
        panels, f"stored value ({totals.key})", "training pixels, 0.1st to 99.9th percentile"
    )
