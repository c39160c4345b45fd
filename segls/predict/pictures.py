"""Pictures of images, labels and predictions for people to look at: uint8 H×W×3 RGB."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["colorize", "displayable", "overlay", "panel"]


def displayable(
    image: torch.Tensor, mean: Sequence[float], std: Sequence[float], stretch: bool = True
) -> torch.Tensor:
    """A normalised C×H×W image as uint8 H×W×3 RGB.

    The normalisation is undone (``image * std + mean``), then: 1 channel is shown grey,
    2 channels as a magenta/green composite (channel 0 magenta, channel 1 green), 3 as RGB
    and more than 3 by their first three. With `stretch`, each channel's 1st..99th percentile
    range is stretched to full scale, so dim (e.g. 16-bit microscopy) images are visible.
    """
    if image.ndim != 3:
        raise ValueError(f"expected a C×H×W image, got shape {tuple(image.shape)}")
    channels = image.shape[0]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"image has {channels} channels but mean/std have {len(mean)}/{len(std)} values; "
            "pass the mean/std the data was normalised with"
        )
    image = image.detach().float().cpu()
    mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    image = image * std_t + mean_t
    if stretch:
        flat = image.flatten(1)
        low = torch.quantile(flat, 0.01, dim=1).view(-1, 1, 1)
        high = torch.quantile(flat, 0.99, dim=1).view(-1, 1, 1)
        image = (image - low) / (high - low).clamp_min(1e-12)
    image = image.clamp(0, 1)
    if channels == 1:
        rgb = image.expand(3, -1, -1)
    elif channels == 2:
        rgb = torch.stack([image[0], image[1], image[0]])
    else:
        rgb = image[:3]
    return (rgb * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()


def colorize(
    label: torch.Tensor, palette: Sequence[Sequence[int]], ignore_index: int = 255
) -> torch.Tensor:
    """An H×W map of class indices as uint8 H×W×3 colours; ignored and unknown pixels white."""
    colors = torch.full((len(palette) + 1, 3), 255, dtype=torch.uint8)
    colors[: len(palette)] = torch.tensor(palette, dtype=torch.uint8).view(-1, 3)
    label = label.detach().cpu().long()
    out_of_range = (label < 0) | (label >= len(palette)) | (label == ignore_index)
    return colors[torch.where(out_of_range, len(palette), label)]


def panel(
    image: torch.Tensor,
    label: torch.Tensor,
    pred: torch.Tensor,
    palette: Sequence[Sequence[int]],
    mean: Sequence[float],
    std: Sequence[float],
    ignore_index: int = 255,
) -> torch.Tensor:
    """Input | ground truth | prediction side by side with thin white gaps, as uint8 H×W′×3."""
    shown = displayable(image, mean, std)
    if shown.shape[:2] != label.shape or label.shape != pred.shape:
        raise ValueError(
            f"image {tuple(image.shape)}, label {tuple(label.shape)} and prediction "
            f"{tuple(pred.shape)} must share H×W"
        )
    gap = torch.full((shown.shape[0], 4, 3), 255, dtype=torch.uint8)
    parts = [shown, gap, colorize(label, palette, ignore_index), gap]
    return torch.cat([*parts, colorize(pred, palette, ignore_index)], dim=1)


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
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    shown = displayable(image, mean, std).float()
    colours = colorize(prediction, palette).float()
    blended = (1.0 - alpha) * shown + alpha * colours
    return blended.round().clamp(0, 255).to(torch.uint8).numpy()
