"""Pictures of images, labels and predictions for people to look at: uint8 H×W×3 RGB."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "captioned_grid",
    "colorize",
    "displayable",
    "error_map",
    "font_of_size",
    "overlay",
    "overlay_bands",
    "panel",
]

_PAPER, _TEXT = (255, 255, 255), (30, 30, 30)
_RIGHT, _WRONG, _IGNORED = (60, 60, 60), (235, 40, 40), (255, 255, 255)
_GAP = 6  # pixels between tiles
_MIN_SIDE = 160  # tiles smaller than this on their short side are enlarged
_SHAPE = 1.5  # width:height the grid aims at (see _columns)


def font_of_size(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled font at `size` pixels (a bitmap font on builds without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1, or no FreeType
        return ImageFont.load_default()


QUANTILE_PIXELS = 2**22  # pixels per channel the stretch's percentiles are taken from
OVERLAY_ROWS = 256  # rows of an overlay blended at a time


def _check_channels(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> None:
    """ValueError unless `image` is C×H×W with one mean and std per channel."""
    if image.ndim != 3:
        raise ValueError(f"expected a C×H×W image, got shape {tuple(image.shape)}")
    channels = image.shape[0]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"image has {channels} channels but mean/std have {len(mean)}/{len(std)} values; "
            "pass the mean/std the data was normalised with"
        )


def _display_bounds(
    image: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, stretch: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel values shown as black and white: the 1st and 99th percentiles, or 0 and 1.

    Above QUANTILE_PIXELS pixels (torch.quantile takes at most 2**24 values) the percentiles
    are those of an evenly strided sample of the rows and columns. One channel at a time:
    sorting all at once would hold every channel's sorted copy and indices together.
    """
    if not stretch:
        return torch.zeros_like(mean), torch.ones_like(mean)
    height, width = image.shape[-2:]
    step = math.ceil(math.sqrt(height * width / QUANTILE_PIXELS))
    sample = image[:, ::step, ::step]
    bounds = torch.empty(2, len(mean))
    for channel, values in enumerate(sample):
        values = (values.float().cpu() * std[channel] + mean[channel]).flatten()
        bounds[:, channel] = torch.quantile(values, torch.tensor([0.01, 0.99]))
    return bounds[0].view(-1, 1, 1), bounds[1].view(-1, 1, 1)


def _rgb_rows(image: torch.Tensor, mean, std, low, high) -> torch.Tensor:
    """Rows of a normalised C×H×W image as uint8 H×W×3, black at `low` and white at `high`."""
    image = image.detach().float().cpu() * std + mean
    image = ((image - low) / (high - low).clamp_min(1e-12)).clamp(0, 1)
    channels = image.shape[0]
    if channels == 1:
        rgb = image.expand(3, -1, -1)
    elif channels == 2:
        rgb = torch.stack([image[0], image[1], image[0]])
    else:
        rgb = image[:3]
    return (rgb * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()


def _tensors(mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """`mean` and `std` as C×1×1 float32 tensors."""
    return (
        torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1),
        torch.tensor(std, dtype=torch.float32).view(-1, 1, 1),
    )


def displayable(
    image: torch.Tensor, mean: Sequence[float], std: Sequence[float], stretch: bool = True
) -> torch.Tensor:
    """A normalised C×H×W image as uint8 H×W×3 RGB.

    The normalisation is undone (``image * std + mean``), then: 1 channel is shown grey,
    2 channels as a magenta/green composite (channel 0 magenta, channel 1 green), 3 as RGB
    and more than 3 by their first three. With `stretch`, each channel's 1st..99th percentile
    range is stretched to full scale, so dim (e.g. 16-bit microscopy) images are visible.
    """
    _check_channels(image, mean, std)
    mean_t, std_t = _tensors(mean, std)
    return _rgb_rows(image, mean_t, std_t, *_display_bounds(image, mean_t, std_t, stretch))


def colorize(
    label: torch.Tensor, palette: Sequence[Sequence[int]], ignore_index: int = 255
) -> torch.Tensor:
    """An H×W map of class indices as uint8 H×W×3 colours; ignored and unknown pixels white."""
    colors = torch.full((len(palette) + 1, 3), 255, dtype=torch.uint8)
    colors[: len(palette)] = torch.tensor(palette, dtype=torch.uint8).view(-1, 3)
    label = label.detach().cpu().long()
    out_of_range = (label < 0) | (label >= len(palette)) | (label == ignore_index)
    return colors[torch.where(out_of_range, len(palette), label)]


def error_map(label: torch.Tensor, pred: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Where a prediction is wrong, as uint8 H×W×3: wrong red, right dark grey, ignored white."""
    label, pred = label.detach().cpu().long(), pred.detach().cpu().long()
    colours = torch.tensor([_RIGHT, _WRONG, _IGNORED], dtype=torch.uint8)
    kind = torch.where(label == ignore_index, 2, (label != pred).long())
    return colours[kind]


def _columns(height: int, width: int, count: int) -> int:
    """Tiles per row (1, 2 or 4 of `count`) that bring the grid closest to 3:2 (width:height).

    TensorBoard's time-series cards fit an image into a box about 330×215 pixels (and the
    images tab into a column 350 wide): a wide image in one row of four becomes a thin strip,
    four stacked ones a thin column; a grid near the box's shape keeps each tile largest.
    """
    shapes = {cols: (cols * width) / (math.ceil(count / cols) * height) for cols in (1, 2, 4)}
    return min(shapes, key=lambda cols: abs(math.log(shapes[cols] / _SHAPE)))


def _legend(draw: ImageDraw.ImageDraw, top: int, width: int, entries: list, font) -> int:
    """Draw colour swatches with class names in rows from `top`; returns the height used."""
    size = font.size if hasattr(font, "size") else 12
    x, y = _GAP, top + _GAP
    for name, colour in entries:
        advance = size + 6 + draw.textlength(name, font=font) + size
        if x > _GAP and x + advance > width:
            x, y = _GAP, y + size + _GAP
        draw.rectangle([x, y, x + size, y + size], fill=tuple(colour), outline=_TEXT)
        draw.text((x + size + 6, y + size / 2), name, fill=_TEXT, font=font, anchor="lm")
        x += advance
    return y + size + _GAP - top if entries else 0


def captioned_grid(
    tiles: list[tuple[str, torch.Tensor]], legend: list | None = None
) -> torch.Tensor:
    """Same-size uint8 H×W×3 tiles in a grid, each under its caption, with a colour legend.

    Small tiles are enlarged (nearest neighbour) to at least `_MIN_SIDE` pixels on their
    short side; the caption's font grows with the grid so it stays legible when TensorBoard
    shrinks the picture to its card. `legend` is a list of (name, [r, g, b]).
    """
    height, width = tiles[0][1].shape[:2]
    zoom = max(1, math.ceil(_MIN_SIDE / min(height, width)))
    height, width = height * zoom, width * zoom
    cols = _columns(height, width, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    font = font_of_size(max(12, round((cols * width) / 30)))
    caption = round(font.size * 1.5) if hasattr(font, "size") else 18
    canvas_width = cols * width + (cols + 1) * _GAP
    canvas = Image.new("RGB", (canvas_width, rows * (caption + height) + (rows + 1) * _GAP), _PAPER)
    draw = ImageDraw.Draw(canvas)
    for index, (text, tile) in enumerate(tiles):
        left = _GAP + (index % cols) * (width + _GAP)
        top = _GAP + (index // cols) * (caption + height + _GAP)
        draw.text((left, top + caption / 2), text, fill=_TEXT, font=font, anchor="lm")
        picture = Image.fromarray(tile.numpy()).resize((width, height), Image.Resampling.NEAREST)
        canvas.paste(picture, (left, top + caption))
    small = font_of_size(max(12, round(0.8 * font.size))) if hasattr(font, "size") else font
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    extra = _legend(measure, 0, canvas_width, legend or [], small)
    if extra:
        grown = Image.new("RGB", (canvas.width, canvas.height + extra), _PAPER)
        grown.paste(canvas, (0, 0))
        _legend(ImageDraw.Draw(grown), canvas.height - _GAP, canvas_width, legend, small)
        canvas = grown
    return torch.from_numpy(np.asarray(canvas).copy())


def panel(
    image: torch.Tensor,
    label: torch.Tensor,
    pred: torch.Tensor,
    palette: Sequence[Sequence[int]],
    mean: Sequence[float],
    std: Sequence[float],
    ignore_index: int = 255,
    class_names: Sequence[str] | None = None,
) -> torch.Tensor:
    """Input, ground truth, prediction and error map, captioned, with a legend: uint8 H′×W′×3.

    The legend names the classes that occur in the ground truth or the prediction (when
    `class_names` are given) and the error map's colours; the error map's caption gives the
    share of the labelled pixels that are predicted wrong. Ignored pixels are white.
    """
    shown = displayable(image, mean, std)
    if shown.shape[:2] != label.shape or label.shape != pred.shape:
        raise ValueError(
            f"image {tuple(image.shape)}, label {tuple(label.shape)} and prediction "
            f"{tuple(pred.shape)} must share H×W"
        )
    valid = label != ignore_index
    wrong = int((valid & (label != pred)).sum())
    tiles = [
        ("input", shown),
        ("ground truth", colorize(label, palette, ignore_index)),
        ("prediction", colorize(pred, palette, ignore_index)),
        (
            f"errors: {100 * wrong / max(int(valid.sum()), 1):.1f}% wrong",
            error_map(label, pred, ignore_index),
        ),
    ]
    present = torch.cat([label[valid], pred.flatten()]).unique().tolist()
    names = class_names or []
    legend = [(names[c], palette[c]) for c in present if 0 <= c < min(len(names), len(palette))]
    legend += [("wrong", _WRONG), ("right", _RIGHT), ("ignored", _IGNORED)]
    return captioned_grid(tiles, legend)


def overlay_bands(
    image: torch.Tensor,
    prediction: torch.Tensor,
    palette: Sequence[Sequence[int]],
    mean: Sequence[float],
    std: Sequence[float],
    alpha: float = 0.5,
) -> Iterator[np.ndarray]:
    """`overlay`, as uint8 h×W×3 bands of OVERLAY_ROWS rows from the top.

    `image` may be anything indexed like a C×H×W tensor (`segls.data.NormalisedImage`).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    _check_channels(image, mean, std)
    mean_t, std_t = _tensors(mean, std)
    low, high = _display_bounds(image, mean_t, std_t, stretch=True)
    for top in range(0, image.shape[-2], OVERLAY_ROWS):
        rows = slice(top, top + OVERLAY_ROWS)
        shown = _rgb_rows(image[:, rows], mean_t, std_t, low, high).float()
        colours = colorize(prediction[rows], palette).float()
        mixed = (1.0 - alpha) * shown + alpha * colours
        yield mixed.round().clamp(0, 255).to(torch.uint8).numpy()


def overlay(
    image: torch.Tensor,
    prediction: torch.Tensor,
    palette: Sequence[Sequence[int]],
    mean: Sequence[float],
    std: Sequence[float],
    alpha: float = 0.5,
) -> np.ndarray:
    """The image (see `displayable`) blended with the prediction's colours.

    `alpha` is the weight of the colours: 0 shows the image alone, 1 the colours alone.
    Returns uint8 H×W×3 RGB.
    """
    blended = np.empty((*image.shape[-2:], 3), np.uint8)
    bands = overlay_bands(image, prediction, palette, mean, std, alpha)
    for top, band in zip(range(0, image.shape[-2], OVERLAY_ROWS), bands, strict=True):
        blended[top : top + len(band)] = band
    return blended
