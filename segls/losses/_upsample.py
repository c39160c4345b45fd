"""Bilinear upsampling fused into the loss: the input checks and the dispatch to a backend.

The backends (``_upsample_torch``, ``_upsample_triton``) interpolate with the taps of
``_interpolation``, so that the fused loss equals
``loss(F.interpolate(logits, size=labels.shape[-2:], ...), labels)`` to float rounding.
"""

from __future__ import annotations

import torch

from segls.losses._composite import composite_needed
from segls.losses._interpolation import upsampled_loss
from segls.losses._upsample_torch import UpsampleLabelSmoothCEFunction
from segls.losses.checks import check_inputs
from segls.losses.options import LossOptions


def check_upsample_inputs(logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Shapes for ``upsample='bilinear'``: logits (N, C, h, w), labels (N, H, W), H ≥ h, W ≥ w."""
    if not isinstance(logits, torch.Tensor) or not isinstance(labels, torch.Tensor):
        check_inputs(logits, labels)  # raises the TypeError that names both types
    if logits.dim() != 4:
        raise ValueError(
            f"upsample='bilinear' needs logits of shape (N, C, h, w); got shape "
            f"{tuple(logits.shape)} with {max(logits.dim() - 2, 0)} spatial dims. Interpolate "
            "them to the labels' size yourself and pass upsample=None"
        )
    batch, _, height, width = logits.shape
    if labels.dim() != 3 or labels.shape[0] != batch:
        raise ValueError(
            f"upsample='bilinear' needs labels of shape ({batch}, H, W) for logits of shape "
            f"{tuple(logits.shape)}; got labels of shape {tuple(labels.shape)}"
        )
    label_height, label_width = labels.shape[1:]
    if label_height < height or label_width < width:
        raise ValueError(
            f"labels ({label_height}×{label_width}) are smaller than the logits "
            f"({height}×{width}): upsample='bilinear' only enlarges, it needs H >= h and W >= w. "
            "Resize the labels with nearest-neighbour interpolation and pass upsample=None"
        )
    if min(height, width) == 0:
        raise ValueError(
            f"upsample='bilinear' needs logits with h, w >= 1; got shape {tuple(logits.shape)}"
        )
    check_inputs(logits, labels[:, :height, :width])


def label_smooth_ce(
    logits: torch.Tensor,
    labels: torch.Tensor,
    options: LossOptions,
    align_corners: bool,
    use_triton: bool,
) -> torch.Tensor:
    """The upsampling loss on the Triton or the torch backend; arguments already checked.

    Forward-mode AD, torch.func transforms and torch.compile take ``upsampled_loss``.
    """
    if use_triton:
        from segls.losses._triton import check_device

        check_device(logits)
    if composite_needed(logits):
        return upsampled_loss(logits, labels, options, align_corners=align_corners)
    if use_triton:  # imports triton
        from segls.losses._upsample_triton import TritonUpsampleCEFunction as function
    else:
        function = UpsampleLabelSmoothCEFunction
    return function.apply(logits, labels, options, align_corners)
