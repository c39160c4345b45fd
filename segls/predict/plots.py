"""Small charts drawn with Pillow: a reliability diagram, line, bar and histogram charts.

Pillow is already needed for images, so charts need no plotting library. Every function
returns a uint8 H×W×3 tensor (what `segls.train.logger.RunLogger.image` takes); `save_png` writes
one to disk atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from segls.io import write_png
from segls.predict.pictures import font_of_size as _font

__all__ = ["bar_chart", "histogram_panels", "line_charts", "reliability_diagram", "save_png"]

_INK, _GRID, _BACKGROUND = (40, 40, 40), (225, 225, 225), (255, 255, 255)
_BAR, _GAP, _DIAGONAL = (70, 120, 190), (230, 120, 100), (150, 150, 150)
_SERIES = [(70, 120, 190), (220, 110, 50), (60, 160, 90), (170, 80, 170), (120, 120, 120)]


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high]."""
    span = high - low if high > low else 1.0
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    first = math.ceil(low / step - 1e-9) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _labels(ticks: Sequence[float]) -> list[str]:
    """Tick values as text, all with the decimals their spacing needs (0.25 -> 2 places)."""
    if len(ticks) < 2:
        return [f"{value:g}" for value in ticks]
    step = abs(ticks[1] - ticks[0])
    decimals = 0
    while decimals < 6 and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6:
        decimals += 1
    return [f"{value:.{decimals}f}" for value in ticks]


class _Axes:
    """One panel: maps data coordinates into a pixel box and draws the frame and ticks."""

    def __init__(self, draw, box, xlim, ylim, font) -> None:
        self.draw, self.font = draw, font
        self.left, self.top, self.right, self.bottom = box
        self.xlim, self.ylim = xlim, ylim

    def point(self, x: float, y: float) -> tuple[float, float]:
        """Pixel position of data point (x, y)."""
        (x0, x1), (y0, y1) = self.xlim, self.ylim
        px = self.left + (x - x0) / ((x1 - x0) or 1.0) * (self.right - self.left)
        py = self.bottom - (y - y0) / ((y1 - y0) or 1.0) * (self.bottom - self.top)
        return px, py

    def frame(self, title: str, xlabel: str, ylabel: str, xticks, yticks) -> None:
        """Grid lines, the box, tick labels, axis labels and the title."""
        draw, font = self.draw, self.font
        for y, text in zip(yticks, _labels(yticks), strict=True):
            _, py = self.point(self.xlim[0], y)
            draw.line([(self.left, py), (self.right, py)], fill=_GRID)
            draw.text((self.left - 6, py), text, fill=_INK, font=font, anchor="rm")
        for x, text in zip(xticks, _labels(xticks), strict=True):
            px, _ = self.point(x, self.ylim[0])
            draw.line([(px, self.bottom), (px, self.bottom + 4)], fill=_INK)
            draw.text((px, self.bottom + 6), text, fill=_INK, font=font, anchor="mt")
        draw.rectangle([self.left, self.top, self.right, self.bottom], outline=_INK)
        middle = (self.left + self.right) / 2
        draw.text((middle, self.bottom + 24), xlabel, fill=_INK, font=font, anchor="mt")
        draw.text((middle, self.top - 8), title, fill=_INK, font=font, anchor="mb")
        draw.text((max(self.left - 64, 4), self.top - 8), ylabel, fill=_INK, font=font, anchor="lb")


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL RGB image as a uint8 H×W×3 tensor."""
    return torch.from_numpy(np.asarray(image.convert("RGB")).copy())


def reliability_diagram(calibration: dict, title: str = "reliability") -> torch.Tensor:
    """Accuracy against confidence per bin, over a panel of the bins' pixel counts.

    `calibration` is the ``calibration`` entry of `segls.metrics.CalibrationMetrics.compute`
    (``num_bins``, ``count``, ``confidence``, ``accuracy``). Blue bars are each bin's
    accuracy; red marks the gap to the bin's mean confidence; the dashed diagonal is
    perfect calibration. The lower panel shows each bin's share of the pixels (log scale)
    with its count.
    """
    num_bins = int(calibration["num_bins"])
    counts = [int(c) for c in calibration["count"]]
    if not (len(counts) == len(calibration["accuracy"]) == num_bins):
        raise ValueError(f"calibration table does not hold {num_bins} bins: {calibration}")
    image = Image.new("RGB", (520, 560), _BACKGROUND)
    draw, font = ImageDraw.Draw(image), _font(13)
    width = 1.0 / num_bins
    upper = _Axes(draw, (70, 40, 500, 370), (0.0, 1.0), (0.0, 1.0), font)
    ticks = [i / 5 for i in range(6)]
    upper.frame(title, "", "accuracy", ticks, ticks)
    for b, (accuracy, confidence) in enumerate(
        zip(calibration["accuracy"], calibration["confidence"], strict=True)
    ):
        if counts[b] == 0 or accuracy is None or math.isnan(accuracy):
            continue
        x0, y_acc = upper.point(b * width, accuracy)
        x1, y_conf = upper.point((b + 1) * width, confidence)
        _, y_zero = upper.point(0.0, 0.0)
        draw.rectangle([x0 + 1, y_acc, x1 - 1, y_zero], fill=_BAR)
        draw.rectangle([x0 + 1, min(y_acc, y_conf), x1 - 1, max(y_acc, y_conf)], outline=_GAP)
    for i in range(0, 40, 2):  # dashed diagonal
        draw.line([upper.point(i / 40, i / 40), upper.point((i + 1) / 40, (i + 1) / 40)],
                  fill=_DIAGONAL, width=2)  # fmt: skip
    total = max(sum(counts), 1)
    lower = _Axes(draw, (70, 420, 500, 510), (0.0, 1.0), (-6.0, 0.0), font)
    lower.frame("", "confidence (top label)", "log10 share of pixels", ticks, [-6, -3, 0])
    for b, count in enumerate(counts):
        if count == 0:
            continue
        share = max(math.log10(count / total), -6.0)
        x0, y_top = lower.point(b * width, share)
        x1, y_bottom = lower.point((b + 1) * width, -6.0)
        draw.rectangle([x0 + 1, y_top, x1 - 1, y_bottom], fill=_BAR)
        draw.text(((x0 + x1) / 2, y_top - 2), _short_count(count), fill=_INK, font=_font(9),
                  anchor="mb")  # fmt: skip
    return _to_tensor(image)


def _short_count(count: int) -> str:
    """1234 -> '1.2k', 2500000 -> '2.5M'."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= limit:
            return f"{count / limit:.1f}{suffix}"
    return str(count)


def line_charts(
    x: Sequence[float],
    panels: dict[str, dict[str, Sequence[float]]],
    xlabel: str,
    title: str = "",
) -> torch.Tensor:
    """Panels side by side, each plotting one or more series against the same `x`.

    `panels` maps a panel's y-axis label to ``{series name: y values}``; a series may hold
    NaN (a missing point). Points are drawn as dots joined by lines, with a legend.
    """
    if not panels:
        raise ValueError("line_charts needs at least one panel")
    panel_width, height, top = 420, 390, 80
    image = Image.new("RGB", (panel_width * len(panels), height), _BACKGROUND)
    draw, font = ImageDraw.Draw(image), _font(13)
    draw.text((image.width / 2, 8), title, fill=_INK, font=font, anchor="mt")
    names = list(dict.fromkeys(name for series in panels.values() for name in series))
    colours = _legend(draw, names, font)  # one legend for all panels, under the title
    xs = [float(v) for v in x]
    xlim = (min(xs), max(xs)) if xs else (0.0, 1.0)
    pad = 0.05 * ((xlim[1] - xlim[0]) or 1.0)
    xlim = (xlim[0] - pad, xlim[1] + pad)
    for index, (ylabel, series) in enumerate(panels.items()):
        values = [v for ys in series.values() for v in ys if v is not None and math.isfinite(v)]
        low, high = (min(values), max(values)) if values else (0.0, 1.0)
        margin = 0.1 * ((high - low) or abs(high) or 1.0)
        ylim = (low - margin, high + margin)
        offset = index * panel_width
        box = (offset + 70, top, offset + panel_width - 20, height - 60)
        axes = _Axes(draw, box, xlim, ylim, font)
        axes.frame("", xlabel, ylabel, _ticks(*xlim), _ticks(*ylim))
        for name, ys in series.items():
            points = [
                axes.point(xv, yv)
                for xv, yv in zip(xs, ys, strict=True)
                if yv is not None and math.isfinite(yv)
            ]
            if len(points) > 1:
                draw.line(points, fill=colours[name], width=2)
            for px, py in points:
                draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=colours[name])
    return _to_tensor(image)


def _legend(draw: ImageDraw.ImageDraw, names: list[str], font, y: int = 36) -> dict:
    """A row of coloured dots with names at height `y`; returns each name's colour."""
    colours = {name: _SERIES[number % len(_SERIES)] for number, name in enumerate(names)}
    legend_x = 70
    for name in names:
        draw.ellipse([legend_x, y - 4, legend_x + 8, y + 4], fill=colours[name])
        draw.text((legend_x + 12, y), name, fill=colours[name], font=font, anchor="lm")
        legend_x += 24 + draw.textlength(name, font=font)
    return colours


def bar_chart(
    labels: Sequence[str], series: dict[str, Sequence[float]], ylabel: str, title: str = ""
) -> torch.Tensor:
    """Grouped bars: one group per label, one bar per series, values in [0, 1] (e.g. shares).

    Labels are written under the groups, turned when they are many.
    """
    count = len(labels)
    if count == 0 or not series:
        raise ValueError("bar_chart needs at least one label and one series")
    group = max(14, min(200, 1200 // count))
    width, height, bottom = 110 + group * count, 420, 320
    image = Image.new("RGB", (max(width, 720), height), _BACKGROUND)
    draw, font = ImageDraw.Draw(image), _font(13)
    draw.text((image.width / 2, 8), title, fill=_INK, font=font, anchor="mt")
    colours = _legend(draw, list(series), font)
    top_value = max([v for values in series.values() for v in values] + [1e-12])
    ylim = (0.0, min(1.0, top_value * 1.1))
    axes = _Axes(draw, (70, 70, 70 + group * count, bottom), (0.0, float(count)), ylim, font)
    axes.frame("", "", ylabel, [], _ticks(*ylim))
    bar = max(1.0, (group - 4) / len(series))
    for index, label in enumerate(labels):
        left, _ = axes.point(index, 0.0)
        for number, (name, values) in enumerate(series.items()):
            _, y_top = axes.point(index, float(values[index]))
            x0 = left + 2 + number * bar
            draw.rectangle([x0, y_top, x0 + bar - 1, bottom], fill=colours[name])
        text = label if len(label) <= 14 else label[:13] + "…"
        if draw.textlength(text, font=font) < group - 4:
            draw.text((left + group / 2, bottom + 6), text, fill=_INK, font=font, anchor="mt")
        else:
            turned = Image.new("RGBA", (int(draw.textlength(text, font=font)) + 4, 16))
            ImageDraw.Draw(turned).text((0, 0), text, fill=_INK, font=font)
            turned = turned.rotate(90, expand=True)
            image.paste(turned, (int(left + group / 2 - 8), bottom + 4), turned)
    return _to_tensor(image)


def histogram_panels(
    panels: Sequence[tuple[str, Sequence[float], Sequence[float]]], xlabel: str, title: str = ""
) -> torch.Tensor:
    """Histograms side by side, each given as (panel title, bin edges, counts), y as shares."""
    if not panels:
        raise ValueError("histogram_panels needs at least one panel")
    panel_width, height = 420, 360
    image = Image.new("RGB", (panel_width * len(panels), height), _BACKGROUND)
    draw, font = ImageDraw.Draw(image), _font(13)
    draw.text((image.width / 2, 8), title, fill=_INK, font=font, anchor="mt")
    for index, (name, edges, counts) in enumerate(panels):
        shares = np.asarray(counts, dtype=np.float64) / max(float(np.sum(counts)), 1.0)
        xlim = (float(edges[0]), float(edges[-1]))
        ylim = (0.0, float(shares.max()) * 1.1 or 1.0)
        offset = index * panel_width
        axes = _Axes(
            draw, (offset + 70, 60, offset + panel_width - 20, height - 60), xlim, ylim, font
        )
        axes.frame(name, xlabel, "share", _ticks(*xlim, count=4), _ticks(*ylim))
        for low, high, share in zip(edges[:-1], edges[1:], shares, strict=True):
            x0, y_top = axes.point(float(low), float(share))
            x1, y_bottom = axes.point(float(high), 0.0)
            draw.rectangle([x0, y_top, max(x0, x1 - 1), y_bottom], fill=_BAR)
    return _to_tensor(image)


def save_png(image: torch.Tensor, path: str | os.PathLike) -> None:
    """Write a uint8 H×W×3 tensor as a PNG, atomically (`segls.io.write_png`)."""
    write_png(path, image)
