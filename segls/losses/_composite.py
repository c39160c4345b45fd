"""The loss from plain differentiable torch ops, for what the fused backends cannot do.

The fused Functions (``_torch``, ``_triton``) compute the gradient in the forward pass and
save only that, which serves one ordinary backward. A gradient that must itself be
differentiable (``create_graph=True``), forward-mode AD and torch.func transforms (vmap, jvp,
grad, is_grads_batched) need the loss as ordinary ops instead: ``composite_loss`` is that
loss through ``log_softmax``. ``functional`` sends calls under forward AD or a torch.func
transform here, and the Functions' backward calls ``differentiable_grad`` when autograd records
it. A variant that resamples the logits first can reuse it on ``F.interpolate``'s output.

Under torch.compile the loss is this composite too (`composite_needed`): dynamo traces plain
ops into the graph, while the Functions' backward reads autograd's state and functorch's
wrappers, which dynamo cannot trace. ``functional`` checks the labels first, outside the
graph (`checks.check_labels_outside_graph`).
"""

from __future__ import annotations

import weakref

import torch
from torch.autograd import forward_ad

from segls.losses.checks import class_index
from segls.losses.options import LossOptions


def composite_loss(
    logits: torch.Tensor, labels: torch.Tensor, options: LossOptions
) -> torch.Tensor:
    """The fused backends' loss (same reduction, dtype and rules) as differentiable torch ops."""
    num_classes = logits.shape[1]
    lb_pos, lb_neg = options.targets(num_classes)
    ignore_index, reduction = options.ignore_index, options.reduction
    compute_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    class_shape = (1, num_classes) + (1,) * (logits.dim() - 2)
    if options.check_labels:  # on the plain labels: vmap's batched tensors cannot be read
        class_index(_unwrapped(labels), num_classes, ignore_index, check_labels=True)
    index, ignored = class_index(labels, num_classes, ignore_index, check_labels=False)
    valid = ignored.logical_not()
    if options.weight is None:
        class_weight = torch.ones(num_classes, dtype=compute_dtype, device=logits.device)
    else:
        class_weight = options.weight.to(compute_dtype)
    weight_y = class_weight[index] * valid
    log_p = torch.log_softmax(logits.to(compute_dtype), 1)
    loss_map = -(lb_pos - lb_neg) * weight_y * log_p.gather(1, index.unsqueeze(1)).squeeze(1)
    if lb_neg:
        loss_map = loss_map - lb_neg * (log_p * class_weight.view(class_shape)).sum(1)
    loss_map = torch.where(valid, loss_map, 0.0)
    if reduction == "none":
        return loss_map
    if reduction == "sum":
        return loss_map.sum()
    denom = weight_y.sum()
    has_weight = denom > 0
    return torch.where(has_weight, loss_map.sum() / torch.where(has_weight, denom, 1.0), 0.0)


def composite_needed(logits: torch.Tensor) -> bool:
    """Whether the loss must be plain ops: under torch.compile, forward AD or a torch.func transform.

    The Functions serve none of them: forward AD and the transforms need ordinary ops, and
    dynamo cannot trace the functorch and autograd-state queries of their backward.
    """
    if torch.compiler.is_compiling():
        return True
    if torch._C._are_functorch_transforms_active():
        return True
    return forward_ad.unpack_dual(logits).tangent is not None


def is_batched(tensor: torch.Tensor) -> bool:
    """Whether a tensor is wrapped by vmap, a torch.func transform or ``is_grads_batched``."""
    functorch = torch._C._functorch
    return functorch.is_functorch_wrapped_tensor(tensor) or functorch.is_legacy_batchedtensor(
        tensor
    )


def remember_logits(ctx, logits: torch.Tensor | None, options: LossOptions) -> None:
    """Keep a weak reference to the logits (never their memory) and the loss's options.

    ``logits=None`` says that they are gone after the forward (overwritten in place).
    """
    keep = logits is not None and not torch.compiler.is_compiling()
    ctx.logits_ref = weakref.ref(logits) if keep else None
    ctx.logits_version = None if logits is None else logits._version
    ctx.loss_options = options.variant(check_labels=False)  # checked by the forward


def differentiable_grad(
    ctx, labels: torch.Tensor, grad_output: torch.Tensor, loss_fn=composite_loss
) -> torch.Tensor:
    """The gradient w.r.t. the logits through ``loss_fn``, for autograd to differentiate.

    ``loss_fn(logits, labels, options)`` is composite_loss, or for a variant that resamples
    the logits first, one that does so before calling it.
    """
    logits = None if ctx.logits_ref is None else ctx.logits_ref()
    if logits is None:
        raise RuntimeError(
            "a differentiable backward (create_graph=True) through label_smooth_softmax_ce "
            "recomputes the loss from the logits, but no tensor refers to them any more (or "
            "inplace=True overwrote them): keep a reference to the logits until backward"
        )
    if logits._version != ctx.logits_version:
        raise RuntimeError(
            "the logits of label_smooth_softmax_ce were modified by an inplace operation after "
            f"the forward (version {logits._version}, expected {ctx.logits_version}), so a "
            "differentiable backward (create_graph=True) cannot recompute the loss from them"
        )
    with torch.enable_grad(), torch.autocast(logits.device.type, enabled=False):
        loss = loss_fn(logits, labels, ctx.loss_options)
    (grad,) = torch.autograd.grad(loss, logits, grad_output, create_graph=True)
    return grad


def _unwrapped(tensor: torch.Tensor) -> torch.Tensor:
    """The plain tensor under torch.func wrappers (a vmapped batch becomes an ordinary dim)."""
    if torch.compiler.is_compiling():  # dynamo cannot trace the functorch query
        return tensor
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(tensor):
        tensor = functorch.get_unwrapped(tensor)
    return tensor
