"""Class ids instead of logits, for a prediction that only writes masks: bounded memory.

`predict_logits` returns N×C×H×W float32 logits: 1.2 GB for one 10000×10000 3-class image,
and its sliding windows add a count map and a quotient of the same size. `predict_classes`
keeps only what a mask needs: in slide mode with one view it sums the windows of one row
of windows at a time (a band of ``crop_size[0]`` rows), turns the rows no later window
touches into class ids and drops them, so besides the image and its ids it holds
C × crop_h × W logits. The ids equal ``predict_logits(...).argmax(1)`` exactly: every pixel
sums the same windows in the same order. Other modes (whole image, flips, scales) need the
whole logits and go through `predict_logits`.

The images may also be given as `Windows`, which read each window when it is needed (for
`tools/infer.py`, normalised from the stored pixels), so in slide mode the whole normalised
batch never exists either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from segls.models.inference import (
    InferenceSettings,
    _forward,
    _pad_bottom_right,
    predict_logits,
    window_starts,
)

__all__ = ["Windows", "predict_classes"]

FINISH_COLUMNS = 512  # columns of a band averaged and turned into ids at a time


@dataclass(frozen=True)
class Windows:
    """N same-size images read a window at a time: ``read(rows, cols)`` is N×C×h×w of them.

    `shape` is the batch's N×C×H×W; `read` gets basic slices and returns the window on the
    device the model runs on.
    """

    shape: tuple[int, int, int, int]
    read: Callable[[slice, slice], torch.Tensor]

    @classmethod
    def of(cls, images: torch.Tensor) -> Windows:
        """The windows of an N×C×H×W tensor (views of it)."""
        if images.ndim != 4:
            raise ValueError(f"images must be N×C×H×W, got shape {tuple(images.shape)}")
        return cls(tuple(images.shape), lambda rows, cols: images[..., rows, cols])


def _ids_dtype(num_classes: int) -> torch.dtype:
    """The smallest integer dtype that holds class ids below `num_classes`."""
    return torch.uint8 if num_classes <= 256 else torch.int32


def _finish_rows(
    sums: torch.Tensor, counts: torch.Tensor, rows: int, ids: torch.Tensor, finite: torch.Tensor
) -> None:
    """Average the first `rows` rows of the band, write their ids, and note non-finite ones.

    FINISH_COLUMNS columns at a time, so the quotient and the 64-bit argmax are small.
    """
    for left in range(0, sums.shape[-1], FINISH_COLUMNS):
        columns = slice(left, left + FINISH_COLUMNS)
        logits = sums[:, :, :rows, columns] / counts[:rows, columns]
        finite &= torch.isfinite(logits).flatten(1).all(dim=1)
        ids[..., columns].copy_(logits.argmax(dim=1))


def _slide_classes(
    model: nn.Module,
    images: Windows,
    settings: InferenceSettings,
    amp_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`predict_classes` in slide mode with one view, one band of windows at a time."""
    (crop_h, crop_w), (step_h, step_w) = settings.crop_size, settings.stride
    batch, height, width = images.shape[0], *images.shape[-2:]
    tops, lefts = window_starts(height, crop_h, step_h), window_starts(width, crop_w, step_w)
    ids = finite = sums = counts = None
    for index, top in enumerate(tops):
        rows = min(crop_h, height - top)
        kept = None if sums is None else top - tops[index - 1]
        for left in lefts:
            window = images.read(slice(top, top + crop_h), slice(left, left + crop_w))
            win_h, win_w = window.shape[-2:]
            logits = _forward(model, _pad_bottom_right(window, crop_h, crop_w), amp_dtype)
            logits = logits[..., :win_h, :win_w]
            if ids is None:
                dtype = _ids_dtype(logits.shape[1])
                ids = torch.empty(batch, height, width, dtype=dtype, device=logits.device)
                finite = torch.ones(batch, dtype=torch.bool, device=logits.device)
            if kept is not None or sums is None:
                band = logits.new_zeros(batch, logits.shape[1], rows, width)
                band_counts = logits.new_zeros(rows, width)
                if sums is not None:
                    band[:, :, : sums.shape[2] - kept] = sums[:, :, kept:]
                    band_counts[: sums.shape[2] - kept] = counts[kept:]
                sums, counts, kept = band, band_counts, None
            sums[..., :win_h, left : left + win_w] += logits
            counts[:win_h, left : left + win_w] += 1
        done = (tops[index + 1] if index + 1 < len(tops) else height) - top
        _finish_rows(sums, counts, done, ids[:, top : top + done], finite)
    return ids, finite


@torch.no_grad()
def predict_classes(
    model: nn.Module,
    images: torch.Tensor | Windows,
    settings: InferenceSettings | None = None,
    amp_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N×H×W class ids, N flags: the image's logits are all finite) of `images`.

    The ids are uint8 up to 256 classes (int32 above) and equal the argmax of
    `predict_logits` with the same arguments; see the module docstring for the memory.
    `Windows` are read whole, except in slide mode with one view.
    """
    settings = settings or InferenceSettings()
    if settings.mode == "slide" and not settings.flip and settings.scales == (1.0,):
        windows = images if isinstance(images, Windows) else Windows.of(images)
        return _slide_classes(model, windows, settings, amp_dtype)
    if isinstance(images, Windows):
        images = images.read(slice(None), slice(None))
    logits = predict_logits(model, images, None, settings, amp_dtype)
    finite = torch.isfinite(logits).flatten(1).all(dim=1)
    return logits.argmax(dim=1).to(_ids_dtype(logits.shape[1])), finite
