"""How a model turns images of any size into logits: padded to the stride, whole or in sliding
windows, with flip and multi-scale averaging.

`predict_logits` is what validation, ``tools/test.py`` and ``tools/infer.py`` call; it
returns float32 N×C×H×W logits at the labels' resolution whatever the mode. The settings
come from the config's ``eval`` section (`settings_from_config`), like mmsegmentation's
``test_cfg``; as there, the inference modes sit with the model (mmseg's ``EncoderDecoder``
has ``whole_inference`` and ``slide_inference``), below the config, which imports `MODES`.

How predictions are combined:

- **Sliding windows** average the *logits* of the windows that overlap a pixel (a count map
  holds how many did). The windows are one prediction at one scale, cut up to fit the
  model; averaging logits keeps a model that sees only each pixel (a 1×1 convolution)
  exactly equal to its whole-image prediction, and it is mmsegmentation's rule.
- **Flips and scales** are different views of the image, i.e. an ensemble. Their
  *probabilities* are averaged, the mixture that an ensemble predicts, and the result is
  returned as ``log(mean softmax)``, which is a valid set of logits: its softmax is exactly
  the averaged probabilities and its argmax their argmax. Averaging logits instead would
  give the renormalised geometric mean, which is sharper than any member and would skew
  the calibration scores (ECE, NLL, Brier) that evaluation computes from these logits.
  With a single view (no flip, scales ``[1.0]``) the model's logits are returned as they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from segls.models.factory import HEAD_ALIGN_CORNERS
from segls.models.names import MODES
from segls.runtime import autocast

__all__ = [
    "MODES",
    "InferenceSettings",
    "forward_padded",
    "full_resolution",
    "output_stride",
    "predict_logits",
    "settings_from_config",
    "window_starts",
]


def output_stride(model: nn.Module) -> int:
    """The number that input height and width must be multiples of (32 for most encoders).

    It is the encoder's total downsampling: 2**depth, or less with dilation (DeepLabV3: 8).
    """
    stride = getattr(getattr(model, "encoder", None), "output_stride", None)
    if stride is None:
        raise TypeError(
            f"{type(model).__name__} has no encoder.output_stride; build it with build_model"
        )
    return int(stride)


def full_resolution(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """`logits` at `size` (the input's H×W): as they are, or upsampled as smp's heads do.

    A model built for ``loss.upsample: fused`` (`segls.models.build_model`) returns its
    logits at 1/4 or 1/8 of the input; every prediction upsamples them here, bilinearly with
    the head's ``align_corners=True``, which gives what the head with its upsampling returns.
    """
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=HEAD_ALIGN_CORNERS)


def forward_padded(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits at the images' size for images of any size: pad to the output stride, forward,
    upsample to the padded size (`full_resolution`), crop back.

    Padding goes at the bottom and right, reflecting the image where it is larger than the
    padding and with zeros where it is not.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be N×C×H×W, got shape {tuple(images.shape)}")
    stride = output_stride(model)
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % stride, -width % stride
    if pad_h == 0 and pad_w == 0:
        return full_resolution(model(images), (height, width))
    mode = "reflect" if pad_h < height and pad_w < width else "constant"
    logits = model(F.pad(images, (0, pad_w, 0, pad_h), mode=mode))
    return full_resolution(logits, (height + pad_h, width + pad_w))[..., :height, :width]


def _positive_pair(value: Sequence[int] | None, name: str) -> tuple[int, int]:
    """`value` as (height, width) of two positive ints; ValueError naming `name` otherwise."""
    pair = tuple(value) if value is not None else ()
    if len(pair) != 2 or not all(type(v) is int and v > 0 for v in pair):
        raise ValueError(f"{name} must be [height, width] as two positive ints, got {value!r}")
    return pair


@dataclass(frozen=True)
class InferenceSettings:
    """A checked inference mode: whole or slide (window and stride), flip, scales."""

    mode: str = "whole"
    crop_size: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"inference mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.mode == "slide":
            crop = _positive_pair(self.crop_size, "the sliding window (eval.crop_size)")
            stride = _positive_pair(self.stride, "the window stride (eval.stride)")
            if stride[0] > crop[0] or stride[1] > crop[1]:
                raise ValueError(
                    f"eval.stride {list(stride)} is larger than the window {list(crop)}: "
                    "pixels between windows would get no prediction; use at most the window"
                )
            object.__setattr__(self, "crop_size", crop)
            object.__setattr__(self, "stride", stride)
        if not isinstance(self.flip, bool):
            raise ValueError(f"eval.flip must be true or false, got {self.flip!r}")
        scales = tuple(float(scale) for scale in self.scales)
        if not scales or not all(0 < scale < math.inf for scale in scales):
            raise ValueError(
                f"eval.scales {list(self.scales)} must be one or more finite factors > 0"
            )
        object.__setattr__(self, "scales", scales)

    def describe(self) -> str:
        """The settings in a few words, e.g. "slide 64x64 stride 42x42, flip, scales 0.5/1"."""
        text = "whole image"
        if self.mode == "slide":
            (crop_h, crop_w), (step_h, step_w) = self.crop_size, self.stride
            text = f"slide {crop_h}x{crop_w} stride {step_h}x{step_w}"
        if self.flip:
            text += ", flip"
        if self.scales != (1.0,):
            text += ", scales " + "/".join(f"{scale:g}" for scale in self.scales)
        return text


def settings_from_config(cfg) -> InferenceSettings:
    """The ``eval`` section of a Config with its defaults resolved.

    An empty ``eval.crop_size`` means ``data.crop_size``; an empty ``eval.stride`` means two
    thirds of the window, rounded down (mmsegmentation's 512 → 341).
    """
    eval_cfg = cfg.eval
    crop = tuple(eval_cfg.crop_size or cfg.data.crop_size)
    stride = tuple(eval_cfg.stride) or tuple(max(1, 2 * size // 3) for size in crop)
    return InferenceSettings(
        mode=eval_cfg.mode,
        crop_size=crop if eval_cfg.mode == "slide" else None,
        stride=stride if eval_cfg.mode == "slide" else None,
        flip=eval_cfg.flip,
        scales=tuple(eval_cfg.scales),
    )


def window_starts(size: int, window: int, step: int) -> list[int]:
    """Start offsets of windows covering ``0..size-1``: every `step`, the last flush with the end.

    A size no larger than the window gives one window at 0 (the image is padded to it).
    """
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, step))
    if starts[-1] + window < size:
        starts.append(size - window)
    return starts


def _pad_bottom_right(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`images` padded at the bottom and right to at least height×width.

    As in `forward_padded`: reflected where the image is larger than the
    padding, zeros where it is not.
    """
    pad_h, pad_w = max(0, height - images.shape[-2]), max(0, width - images.shape[-1])
    if pad_h == 0 and pad_w == 0:
        return images
    reflect = pad_h < images.shape[-2] and pad_w < images.shape[-1]
    return F.pad(images, (0, pad_w, 0, pad_h), mode="reflect" if reflect else "constant")


def _forward(model: nn.Module, images: torch.Tensor, amp_dtype: torch.dtype | None) -> torch.Tensor:
    """Float32 logits of one pass at the images' own size, under autocast to `amp_dtype`."""
    with autocast(images.device, amp_dtype):
        logits = forward_padded(model, images)
    return logits.float()


def _slide(
    model: nn.Module,
    images: torch.Tensor,
    settings: InferenceSettings,
    amp_dtype: torch.dtype | None,
) -> torch.Tensor:
    """Logits at the images' size from windows of ``settings.crop_size``, overlaps averaged."""
    (crop_h, crop_w), (step_h, step_w) = settings.crop_size, settings.stride
    height, width = images.shape[-2:]
    total = None
    counts = torch.zeros(height, width, device=images.device)
    for top in window_starts(height, crop_h, step_h):
        for left in window_starts(width, crop_w, step_w):
            window = images[..., top : top + crop_h, left : left + crop_w]
            win_h, win_w = window.shape[-2:]
            padded = _pad_bottom_right(window, crop_h, crop_w)
            logits = _forward(model, padded, amp_dtype)[..., :win_h, :win_w]
            if total is None:
                total = logits.new_zeros(*logits.shape[:2], height, width)
            total[..., top : top + win_h, left : left + win_w] += logits
            counts[top : top + win_h, left : left + win_w] += 1
    return total / counts


def _resize(tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of N×C×H×W `tensor` to `size` (no-op when it already has it)."""
    if tuple(tensor.shape[-2:]) == size:
        return tensor
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)


def _view_logits(
    model: nn.Module,
    images: torch.Tensor,
    out_size: tuple[int, int],
    scale: float,
    flip: bool,
    settings: InferenceSettings,
    amp_dtype: torch.dtype | None,
) -> torch.Tensor:
    """Logits of one view (the images resized by `scale`, flipped or not) at `out_size`."""
    if scale != 1.0:
        height, width = images.shape[-2:]
        scaled = (max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5)))
        images = _resize(images, scaled)
    if flip:
        images = images.flip(-1)
    if settings.mode == "slide":
        logits = _slide(model, images, settings, amp_dtype)
    else:
        logits = _forward(model, images, amp_dtype)
    if flip:
        logits = logits.flip(-1)
    return _resize(logits, out_size)


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    out_size: Sequence[int] | None = None,
    settings: InferenceSettings | None = None,
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Float32 N×C×H×W logits of `images` at `out_size` (default: the images' H×W).

    `settings` (default: whole image) chooses the mode; `amp_dtype` (float16, bfloat16 or
    None for float32) the autocast precision of the forward passes. Several views (flip,
    scales) are combined as ``log(mean softmax)``; see the module docstring for why.
    The model's train/eval mode is left as it is: call ``model.eval()`` first.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be N×C×H×W, got shape {tuple(images.shape)}")
    settings = settings or InferenceSettings()
    size = tuple(int(s) for s in (out_size if out_size is not None else images.shape[-2:]))
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"out_size must be (height, width) of positive ints, got {out_size!r}")
    flips = (False, True) if settings.flip else (False,)
    views = [(scale, flip) for scale in settings.scales for flip in flips]
    if len(views) == 1:
        return _view_logits(model, images, size, *views[0], settings, amp_dtype)
    log_sum = None
    for scale, flip in views:
        logits = _view_logits(model, images, size, scale, flip, settings, amp_dtype)
        log_probs = torch.log_softmax(logits, dim=1)
        log_sum = log_probs if log_sum is None else torch.logaddexp(log_sum, log_probs)
    return log_sum - math.log(len(views))
