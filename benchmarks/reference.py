"""The golden values the loss is checked against, shared by the tests and the GPU check.

`dense_loss` is the loss written out from its formula, independent of segls.losses: an
explicit target tensor q (q_k = w_k (lb_neg + (lb_pos − lb_neg)[k = y])) times log_softmax,
optionally after PyTorch's bilinear interpolation to the labels' size. Given float64 logits
it is the reference of tests/test_losses*.py and of the GPU check; given the benchmark's
float32 logits it is "one-hot dense", the formulation segls replaces. `make_inputs` draws
random logits and labels; `VALUE_TOL` and `GRAD_TOL` say how close a loss computed in lower
precision must come.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "GRAD_TOL",
    "IGNORE",
    "UPSAMPLE_GRAD_TOL",
    "VALUE_TOL",
    "dense_loss",
    "make_inputs",
    "smoothed",
]

IGNORE = 255
VALUE_TOL = 2e-5  # of the loss against the float64 reference, relative and absolute
# Of the gradient: GRAD_TOL[dtype] × the largest reference gradient entry (+ 1e-7).
GRAD_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
# The GPU check's fused-upsampling section at its real sizes allows bfloat16 gradients more.
UPSAMPLE_GRAD_TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def smoothed(eps: float, num_classes: int) -> tuple[float, float]:
    """(lb_pos, lb_neg) of label smoothing ε over `num_classes` classes."""
    return 1.0 - eps + eps / num_classes, eps / num_classes


def dense_loss(
    x: torch.Tensor,
    labels: torch.Tensor,
    lb_pos: float,
    lb_neg: float,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    upsample: str | None = None,
    align_corners: bool = False,
) -> torch.Tensor:
    """−Σ_k q_k log softmax(x)_k per pixel, with an explicit target q, in `x`'s dtype.

    q_k = w_k (lb_neg + (lb_pos − lb_neg)[k = y]); labels equal to `IGNORE` or outside
    [0, C) are ignored (zero loss and gradient). "mean" divides by Σ w_y over the valid
    pixels (their count without `weight`), and is 0 when that is 0. With
    ``upsample="bilinear"`` the logits are first interpolated to the labels' size.
    """
    if upsample == "bilinear":
        size = tuple(labels.shape[-2:])
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)
    num_classes = x.shape[1]
    valid = (labels != IGNORE) & (labels >= 0) & (labels < num_classes)
    safe = torch.where(valid, labels.long(), 0)
    target = torch.full_like(x, lb_neg)
    target.scatter_(1, safe.unsqueeze(1), lb_pos)
    if weight is not None:
        weight = weight.to(x.dtype)
        target = target * weight.view(1, num_classes, *[1] * (x.dim() - 2))
    per_pixel = -(torch.log_softmax(x, 1) * target).sum(1)
    per_pixel = per_pixel.masked_fill(~valid, 0.0)
    if reduction == "none":
        return per_pixel
    if reduction == "sum":
        return per_pixel.sum()
    denom = valid.sum() if weight is None else (weight[safe] * valid).sum()
    return per_pixel.sum() / torch.where(denom > 0, denom, 1)  # no host sync


def make_inputs(
    shape: tuple[int, ...],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    seed: int = 0,
    ignore_fraction: float = 0.05,
    layout: str = "contiguous",
    label_size: tuple[int, ...] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits N(0, 9) rounded to `dtype` and int64 labels, `ignore_fraction` of them
    `IGNORE`.

    The logits are contiguous or channels_last (`layout`); the labels have the logits'
    spatial size, or `label_size`.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    logits = torch.randn(shape, generator=generator, device=device).mul_(3).to(dtype)
    if layout == "channels_last":
        logits = logits.contiguous(memory_format=torch.channels_last)
    label_shape = (shape[0], *(shape[2:] if label_size is None else label_size))
    labels = torch.randint(0, shape[1], label_shape, generator=generator, device=device)
    ignored = torch.rand(label_shape, generator=generator, device=device) < ignore_fraction
    return logits, torch.where(ignored, IGNORE, labels)
