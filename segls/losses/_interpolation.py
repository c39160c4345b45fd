"""What both upsampling backends share: the interpolation taps, and what backward recomputes from.

``linear_taps`` are the source indices and weights ``F.interpolate(mode='bilinear')`` uses for
each output row and column, so that the fused loss equals
``loss(F.interpolate(logits, size=labels.shape[-2:], ...), labels)`` to float rounding;
``support_taps`` is their adjoint. ``upsampled_loss`` is that composite, which forward-mode
AD, torch.func transforms, torch.compile and a differentiable backward take. A leaf of the
losses package's upsampling modules: ``_upsample`` (checks, dispatch) imports the backends,
and the backends import this.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache, partial

import torch
import torch.nn.functional as F

from segls.losses._composite import composite_loss, remember_logits
from segls.losses.options import LossOptions


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


def upsampled_loss(
    logits: torch.Tensor, labels: torch.Tensor, options: LossOptions, *, align_corners: bool
) -> torch.Tensor:
    """``composite_loss`` of ``F.interpolate(logits, labels' size)``: plain differentiable ops.

    Half-precision logits are interpolated in float32, as the fused backends do.
    """
    compute = logits if logits.dtype == torch.float64 else logits.float()
    full = F.interpolate(
        compute, size=tuple(labels.shape[-2:]), mode="bilinear", align_corners=align_corners
    )
    return composite_loss(full, labels, options)


def remember_inputs(ctx, logits: torch.Tensor, options: LossOptions, align_corners: bool) -> None:
    """What a differentiable backward (``_composite.differentiable_grad``) recomputes from."""
    remember_logits(ctx, logits, options)
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
