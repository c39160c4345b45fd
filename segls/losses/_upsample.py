"""Bilinear upsampling fused into the loss: checks, interpolation taps, dispatch, composite form.

Both backends interpolate with the taps ``linear_taps`` returns, the source indices and weights
``F.interpolate(mode='bilinear')`` uses for each output row and column, so that the fused loss
equals ``loss(F.interpolate(logits, size=labels.shape[-2:], ...), labels)`` to float rounding.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache, partial

import torch
import torch.nn.functional as F

from segls.losses._composite import composite_loss, remember_logits, transforms_active
from segls.losses.checks import check_inputs

UPSAMPLE_MODES = ("bilinear",)


def check_upsample_options(upsample: str | None, align_corners: bool, inplace: bool) -> None:
    """The mode, ``align_corners`` and ``inplace`` (which cannot work when upsampling)."""
    if upsample is not None and upsample not in UPSAMPLE_MODES:
        raise ValueError(f"upsample must be None or 'bilinear'; got {upsample!r}")
    if not isinstance(align_corners, bool):
        raise TypeError(f"align_corners must be True or False; got {align_corners!r}")
    if upsample is not None and inplace:
        raise ValueError(
            "inplace=True cannot be combined with upsample='bilinear': the gradient of each "
            "low-resolution logit is summed from many full-resolution pixels that read it, so it "
            "cannot overwrite the logits while they are read. Pass inplace=False"
        )


def check_upsample_inputs(
    logits: torch.Tensor,
    labels: torch.Tensor,
    upsample: str,
    align_corners: bool,
    inplace: bool = False,
) -> None:
    """Shapes for ``upsample='bilinear'``: logits (N, C, h, w), labels (N, H, W), H ≥ h, W ≥ w."""
    check_upsample_options(upsample, align_corners, inplace)
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


@lru_cache(maxsize=64)
def linear_taps(
    in_size: int, out_size: int, align_corners: bool, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per output index: source indices i0, i1 and weights w0, w1 as F.interpolate forms them.

    The scale is in/out (align_corners False: source = scale·(i + ½) − ½, clamped at 0) or
    (in − 1)/(out − 1) (True: source = scale·i), in float32 for every logits dtype but float64.
    PyTorch's kernels contract scale·(i + ½) − ½ into one fused multiply-add, so it is
    computed exactly here and rounded once. Computed on the CPU once per size pair and device
    (the copy to a GPU is the one sync).
    """
    position = torch.arange(out_size, dtype=dtype)
    if align_corners:
        scale = torch.tensor(in_size - 1 if out_size > 1 else 0, dtype=dtype) / max(out_size - 1, 1)
        source = scale * position
    else:
        scale = Fraction((torch.tensor(in_size, dtype=dtype) / out_size).item())
        exact = [float(scale * Fraction(2 * i + 1, 2) - Fraction(1, 2)) for i in range(out_size)]
        source = torch.tensor(exact, dtype=torch.float64).to(dtype).clamp_min(0)
    index0 = source.long().clamp_max(in_size - 1)
    weight1 = (source - index0).clamp(0, 1)
    index1 = index0 + (index0 < in_size - 1).long()
    taps = (index0, index1, 1 - weight1, weight1)
    return tuple(t.to(device) for t in taps)


def label_smooth_ce(
    logits: torch.Tensor,
    labels: torch.Tensor,
    lb_pos: float,
    lb_neg: float,
    weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
    check_labels: bool,
    align_corners: bool,
    use_triton: bool,
) -> torch.Tensor:
    """The upsampling loss on the Triton or the torch backend; arguments already checked.

    Forward-mode AD, torch.func transforms and torch.compile take ``upsampled_loss``.
    """
    if use_triton:
        from segls.losses._triton import check_device

        check_device(logits)
    if transforms_active(logits) or torch.compiler.is_compiling():
        return upsampled_loss(
            logits, labels, lb_pos, lb_neg, weight, ignore_index, reduction, check_labels,
            align_corners=align_corners,
        )  # fmt: skip
    options = {
        "lb_pos": lb_pos,
        "lb_neg": lb_neg,
        "weight": weight,
        "ignore_index": ignore_index,
        "reduction": reduction,
        "check_labels": check_labels,
    }
    if use_triton:
        from segls.losses._upsample_triton import TritonUpsampleCEFunction as function
    else:
        from segls.losses._upsample_torch import UpsampleLabelSmoothCEFunction as function
    return function.apply(logits, labels, options, align_corners)


def upsampled_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    lb_pos: float,
    lb_neg: float,
    weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
    check_labels: bool = True,
    *,
    align_corners: bool,
) -> torch.Tensor:
    """``composite_loss`` of ``F.interpolate(logits, labels' size)``: plain differentiable ops.

    Half-precision logits are interpolated in float32, as the fused backends do.
    """
    compute = logits if logits.dtype == torch.float64 else logits.float()
    full = F.interpolate(
        compute, size=tuple(labels.shape[-2:]), mode="bilinear", align_corners=align_corners
    )
    return composite_loss(
        full, labels, lb_pos, lb_neg, weight, ignore_index, reduction, check_labels
    )


def remember_inputs(ctx, logits: torch.Tensor, options: dict, align_corners: bool) -> None:
    """What a differentiable backward (``_composite.differentiable_grad``) recomputes from."""
    loss_args = tuple(options[k] for k in ("lb_pos", "lb_neg", "weight", "ignore_index"))
    remember_logits(ctx, logits, (*loss_args, options["reduction"]))
    ctx.loss_fn = partial(upsampled_loss, align_corners=align_corners)


@lru_cache(maxsize=64)
def support_taps(
    in_size: int, out_size: int, align_corners: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The adjoint of ``linear_taps`` (float32): per source index, the outputs that read it.

    Returns (index, weight), each (in_size, K): row i lists the output indices whose taps
    include i, in increasing order, with the tap's weight (an output at the border whose two
    taps coincide is listed twice); rows are padded with index 0 and weight 0.
    """
    index0, index1, weight0, weight1 = linear_taps(
        in_size, out_size, align_corners, torch.float32, torch.device("cpu")
    )
    source = torch.cat([index0, index1])
    output = torch.arange(out_size).repeat(2)
    weight = torch.cat([weight0, weight1])
    order = torch.argsort(source * (2 * out_size) + output, stable=True)
    source, output, weight = source[order], output[order], weight[order]
    counts = torch.bincount(source, minlength=in_size)
    slot = torch.arange(source.numel()) - (torch.cumsum(counts, 0) - counts)[source]
    table_index = torch.zeros(in_size, int(counts.max()), dtype=torch.long)
    table_weight = torch.zeros(in_size, int(counts.max()), dtype=torch.float32)
    table_index[source, slot] = output
    table_weight[source, slot] = weight
    return table_index.to(device), table_weight.to(device)
