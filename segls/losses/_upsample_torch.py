"""Torch backend of the upsampling loss: full-resolution logits exist one band of rows at a time.

A band is a run of output rows of some images. Its logits come from the low-resolution rows
its taps reach: those rows are interpolated along the width by ``F.interpolate`` (their height
kept, which is exact), then each output row is w0·row[i0] + w1·row[i1]. The per-pixel loss of
``_torch.forward_with_grad`` gives the band's loss and gradient, which goes back through the
adjoint of the interpolation: a (rows × band) matrix product, then PyTorch's own bilinear
backward along the width, added into the low-resolution gradient. Bands run in a fixed order,
so the sums are deterministic on the CPU (on CUDA PyTorch's bilinear backward adds with
atomics; the Triton backend does not). Peak memory above the inputs is the low-resolution
gradient plus about three band-sized buffers: the band, the loss's one buffer, temporaries.

With a scalar loss the gradient is formed during the forward pass, so backward only scales
it. With ``reduction='none'`` the upstream gradient weights each pixel before the adjoint, so
backward runs the bands again. A backward that must itself be differentiable
(``create_graph=True``) goes through the composite ``F.interpolate`` + loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segls.losses import _torch
from segls.losses._composite import differentiable_grad, is_batched
from segls.losses._interpolation import linear_taps, remember_inputs
from segls.losses.checks import class_index
from segls.losses.options import LossOptions

BAND_FRACTION = 32  # a band holds about 1/32 of the full-resolution logits ...
BAND_ELEMENTS = (2**21, 2**24)  # ... but at least 8 MiB and at most 64 MiB of float32
CPU = torch.device("cpu")


def bands(batch: int, height: int, row_elements: int) -> list[tuple[slice, int, int]]:
    """(images, first row, end row) of each band, whole rows of ``row_elements`` logits.

    Fewer, larger bands cost memory; more, smaller ones cost time: each band is some forty
    torch operations, and on a loaded machine every parallel one may wait for a free core.
    """
    low, high = BAND_ELEMENTS
    budget = min(max(batch * height * row_elements // BAND_FRACTION, low), high)
    images_per_band = max(min(budget // max(row_elements * height, 1), batch), 1)
    rows_per_band = max(budget // max(row_elements * images_per_band, 1), 1)
    return [
        (slice(start, min(start + images_per_band, batch)), top, min(top + rows_per_band, height))
        for start in range(0, batch, images_per_band)
        for top in range(0, height, rows_per_band)
    ]


def _row_mixing(taps, top, bottom, first, last, dtype) -> torch.Tensor:
    """(band rows, low-res rows first..last) weights of the height interpolation."""
    index0, index1, weight0, weight1 = (t[top:bottom] for t in taps)
    source = torch.arange(first, last + 1, device=index0.device).view(1, -1)
    return (index0.view(-1, 1) == source) * weight0.view(-1, 1).to(dtype) + (
        index1.view(-1, 1) == source
    ) * weight1.view(-1, 1).to(dtype)


def _band_logits(logits, images, mixing, first, last, out_width, align_corners, dtype):
    """Full-resolution logits of one band, from low-resolution rows first..last."""
    rows = logits[images, :, first : last + 1].to(dtype)
    along_width = F.interpolate(
        rows, size=(last - first + 1, out_width), mode="bilinear", align_corners=align_corners
    )
    return torch.matmul(mixing, along_width.contiguous())


def _band_adjoint(grad_band, mixing, low_shape, align_corners) -> torch.Tensor:
    """Gradient w.r.t. low-resolution rows first..last of a band's full-resolution gradient."""
    along_width = torch.matmul(mixing.transpose(0, 1), grad_band)
    return torch.ops.aten.upsample_bilinear2d_backward(
        along_width, list(along_width.shape[2:]), list(low_shape), align_corners, None, None
    )


def banded_pass(
    logits: torch.Tensor,
    labels: torch.Tensor,
    options: LossOptions,
    align_corners: bool,
    need_grad: bool,
    pixel_factor: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Loss (reduced as ``options.reduction``) and the low-res gradient, band by band.

    ``pixel_factor`` (N, H, W) weights each pixel's gradient (backward of ``'none'``).
    """
    reduction, weight = options.reduction, options.weight
    band_options = options.variant(reduction="none" if reduction == "none" else "sum")
    band_options = band_options.variant(check_labels=False)  # checked by the forward
    batch, num_classes, in_height, in_width = logits.shape
    out_height, out_width = labels.shape[1:]
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    height_taps = linear_taps(in_height, out_height, align_corners, dtype, logits.device)
    first_rows, last_rows = linear_taps(in_height, out_height, align_corners, dtype, CPU)[:2]
    grad = torch.zeros_like(logits, dtype=dtype) if need_grad else None
    if reduction == "none":
        loss_map = torch.zeros(labels.shape, dtype=dtype, device=logits.device)
    total = torch.zeros((), dtype=torch.float64, device=logits.device)
    denom = torch.zeros((), dtype=torch.float64, device=logits.device)
    for images, top, bottom in bands(batch, out_height, num_classes * out_width):
        first, last = int(first_rows[top]), int(last_rows[bottom - 1])
        mixing = _row_mixing(height_taps, top, bottom, first, last, dtype)
        band = _band_logits(logits, images, mixing, first, last, out_width, align_corners, dtype)
        band_labels = labels[images, top:bottom]
        band_loss, band_grad = _torch.forward_with_grad(band, band_labels, band_options, need_grad)
        del band
        if reduction == "none":
            loss_map[images, top:bottom] = band_loss
        else:
            total += band_loss
        if reduction == "mean":
            denom += _valid_weight(band_labels, num_classes, options.ignore_index, weight)
        if band_grad is not None:
            if pixel_factor is not None:
                band_grad.mul_(pixel_factor[images, top:bottom].unsqueeze(1))
            low_shape = (band_grad.shape[0], num_classes, last - first + 1, in_width)
            grad[images, :, first : last + 1] += _band_adjoint(
                band_grad, mixing, low_shape, align_corners
            )
    if reduction == "none":
        return loss_map, _in_dtype(grad, logits.dtype)
    if reduction == "mean":
        scale = torch.where(denom > 0, 1.0 / denom, 0.0)
        total = total * scale
        if grad is not None:
            grad.mul_(scale.to(dtype))
    return total.to(dtype), _in_dtype(grad, logits.dtype)


def _valid_weight(labels, num_classes: int, ignore_index: int, weight) -> torch.Tensor:
    """The number of valid pixels, or their label-class weights' sum, in float64."""
    index, ignored = class_index(labels, num_classes, ignore_index, check_labels=False)
    if weight is None:
        return (ignored.numel() - torch.count_nonzero(ignored)).double()
    return weight[index].masked_fill_(ignored, 0.0).sum(dtype=torch.float64)


def _in_dtype(grad: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return grad if grad is None or grad.dtype == dtype else grad.to(dtype)


class UpsampleLabelSmoothCEFunction(torch.autograd.Function):
    """Autograd wrapper: saves the low-resolution gradient (scalar losses) and the inputs."""

    @staticmethod
    def forward(ctx, logits, labels, options, align_corners):
        with torch.autocast(logits.device.type, enabled=False):
            if options.check_labels:
                class_index(labels, logits.shape[1], options.ignore_index, check_labels=True)
            need_grad = ctx.needs_input_grad[0] and options.reduction != "none"
            loss, grad = banded_pass(logits, labels, options, align_corners, need_grad)
        ctx.options, ctx.align_corners = options, align_corners
        ctx.save_for_backward(logits, labels, grad)
        remember_inputs(ctx, logits, options, align_corners)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        logits, labels, grad = ctx.saved_tensors
        options, align_corners = ctx.options, ctx.align_corners
        per_pixel = options.reduction == "none"
        if torch.is_grad_enabled() or (per_pixel and is_batched(grad_output)):
            # create_graph=True, or one upstream gradient per vmapped batch: the composite form
            grad = differentiable_grad(ctx, labels, grad_output, ctx.loss_fn)
        elif per_pixel:
            with torch.autocast(logits.device.type, enabled=False):
                _, grad = banded_pass(logits, labels, options, align_corners, True, grad_output)
        else:
            factor = None if _torch.is_one(grad_output) else grad_output
            grad = _torch.scale_saved_grad(grad, factor)
        return grad, None, None, None
