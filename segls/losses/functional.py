"""The functional form of the label-smoothing softmax cross-entropy and backend dispatch."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import cache

import torch

from segls.losses import _torch, _upsample
from segls.losses._composite import composite_loss, composite_needed
from segls.losses._label_dtype import signed_labels
from segls.losses.checks import (
    check_inputs,
    check_weight_shape,
    class_index,
    outside_graph,
)
from segls.losses.options import ComputeOptions, LossOptions


def label_smooth_softmax_ce(
    logits: torch.Tensor,
    labels: torch.Tensor,
    lb_smooth: float | None = None,
    *,
    lb_pos: float | None = None,
    lb_neg: float | None = None,
    ignore_index: int = 255,
    reduction: str = "mean",
    weight: torch.Tensor | Sequence[float] | None = None,
    check_labels: bool = True,
    backend: str = "auto",
    inplace: bool = False,
    upsample: str | None = None,
    align_corners: bool = False,
) -> torch.Tensor:
    """Label-smoothing softmax cross-entropy over dim 1 of (N, C, d1, ..., dk) logits.

    With ``lb_smooth`` = ε (default 0.1) the target is (1 − ε) on the label class plus ε/C on
    every class, equal to ``F.cross_entropy(..., label_smoothing=ε)``; with ``lb_pos``/``lb_neg``
    it is lb_pos on the label class and lb_neg elsewhere. Pixels equal to ``ignore_index`` add
    nothing; labels of any integer dtype give the result of the same values as int64 (an
    ``ignore_index`` the dtype cannot hold matches no pixel). ``'mean'`` divides by the number
    of valid pixels (with ``weight``: by the sum of their label-class weights) and returns 0
    with a zero gradient when there is none, where PyTorch returns NaN. The loss is float32
    (float64 for float64 logits); the gradient has the logits' dtype. ``check_labels`` raises
    for labels outside [0, C) at one min/max reduction (a host sync on GPU); with
    ``check_labels=False`` such labels count as ignored, never a device-side assert.

    Backward, double backward, forward-mode AD, torch.func transforms (vmap, grad, jvp) and
    batched gradients (``is_grads_batched``) all work. Under forward AD, a torch.func
    transform or torch.compile the loss is computed from ordinary torch ops (``_composite``):
    dynamo traces it as one graph (``fullgraph=True`` works) with ``check_labels=False``; the
    label check runs outside the graph, one graph break per call. A differentiable
    backward (``create_graph=True``) recomputes it from the logits, which something must still
    refer to at that point.

    ``backend='auto'`` takes the fused Triton kernel for CUDA logits when triton is installed
    (not float64, not under torch.compile), else torch. On the Triton backend
    ``check_labels=True`` costs one host sync (reading the kernel's bad-label flag) and
    ``check_labels=False`` none. ``inplace=True`` (Triton only; torch ignores it) writes the
    gradient into the logits' memory instead of a new buffer: their values are gone after the
    forward (also when ``check_labels`` then raises), so use it only when nothing else needs
    the logits (the write is visible to autograd: a graph node that saved them raises at
    backward; a differentiable backward then raises too). float64 logits always take the
    torch backend.

    ``upsample='bilinear'`` takes (N, C, h, w) logits and (N, H, W) labels with H >= h, W >= w
    and equals the loss of ``F.interpolate(logits, size=(H, W), mode='bilinear',
    align_corners=align_corners)`` without forming it: full-resolution logits exist one band
    of rows at a time (torch) or one pixel block at a time (Triton). Under forward AD, a
    torch.func transform or torch.compile it is that composite, interpolation included.

    The options are checked here, each call (a bad one raises a ValueError naming it); the
    module `LabelSmoothSoftmaxCE` checks them once, at construction, as one `LossOptions`.
    """
    options = LossOptions(lb_smooth, lb_pos, lb_neg, weight, ignore_index, reduction, check_labels)
    return loss_with_options(
        logits, labels, options, ComputeOptions(backend, inplace, upsample, align_corners)
    )


def loss_with_options(
    logits: torch.Tensor, labels: torch.Tensor, options: LossOptions, compute: ComputeOptions
) -> torch.Tensor:
    """The loss with options checked already (the module's forward): check the inputs, dispatch."""
    if options.check_labels and torch.compiler.is_compiling():
        check_outside_graph(logits, labels, compute, options.ignore_index)
        options = options.variant(check_labels=False)
    else:
        _check_inputs(logits, labels, compute)
    labels = signed_labels(labels, logits.shape[1], options.ignore_index, options.check_labels)
    if options.weight is not None:
        check_weight_shape(options.weight, logits.shape[1])
        options = options.with_weight(options.weight.to(logits.device))
    use_triton = _use_triton(compute.backend, logits)
    if compute.upsample is not None:
        return _upsample.label_smooth_ce(logits, labels, options, compute.align_corners, use_triton)
    if composite_needed(logits):
        return composite_loss(logits, labels, options)
    if use_triton:
        from segls.losses import _triton

        return _triton.label_smooth_ce(logits, labels, options, compute.inplace)
    return _torch.LabelSmoothCEFunction.apply(logits, labels, options)


def _check_inputs(logits: torch.Tensor, labels: torch.Tensor, compute: ComputeOptions) -> None:
    """Shapes, dtypes and devices: metadata, which dynamo checks while it traces (no break)."""
    if compute.upsample is None:
        check_inputs(logits, labels)
    else:
        _upsample.check_upsample_inputs(logits, labels)


@outside_graph
def check_outside_graph(
    logits: torch.Tensor, labels: torch.Tensor, compute: ComputeOptions, ignore_index: int
) -> None:
    """The inputs' checks, then the labels', run eagerly under torch.compile: one graph break.

    First, before any op, so that the break leaves no graph of the loss's own before it.
    """
    _check_inputs(logits, labels, compute)
    labels = signed_labels(labels, logits.shape[1], ignore_index, check_labels=True)
    class_index(labels, logits.shape[1], ignore_index, check_labels=True)


def _use_triton(backend: str, logits: torch.Tensor) -> bool:
    """Whether the backend asked for (auto, torch, triton) is the Triton kernel for these logits."""
    if logits.dtype == torch.float64 or backend == "torch":
        return False
    if backend == "auto":
        return logits.is_cuda and _triton_installed() and not torch.compiler.is_compiling()
    if not _triton_installed():
        raise ImportError("backend='triton' needs the triton package: pip install triton")
    return True


@cache
def _triton_installed() -> bool:
    """Whether triton can be imported, found without importing it."""
    return importlib.util.find_spec("triton") is not None
