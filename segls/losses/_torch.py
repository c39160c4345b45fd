"""Torch backend: the gradient is computed during the forward pass and saved alone.

Per valid pixel with label y, the target is c_k = w_k * (lb_neg + (lb_pos - lb_neg) * [k == y])
(w = 1 without class weights), so with p = softmax(x) and lse = logsumexp(x):

    loss = sum_k c_k * lse - sum_k c_k * x_k
    dloss/dx_k = (sum_k c_k) * p_k - c_k

The forward writes that gradient (already scaled by the reduction) into the one full-size
buffer it needs for exp(x - max) anyway. Backward is a scale by ``grad_output``, done in place
when autograd is about to free the graph, so fwd+bwd holds a single logits-sized buffer.
"""

from __future__ import annotations

import torch

from segls.losses.checks import labelled_mask, raise_bad_labels


def _keep_graph() -> bool:
    """Whether the running backward keeps the graph (retain_graph=True or create_graph=True)."""
    if torch.compiler.is_compiling():
        return True
    getter = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return True if getter is None else bool(getter())


def forward_with_grad(
    logits: torch.Tensor,
    labels: torch.Tensor,
    lb_pos: float,
    lb_neg: float,
    weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
    need_grad: bool,
    check_labels: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Loss (float32, or float64 for float64 logits) and, if asked, its gradient in logits' dtype."""
    num_classes = logits.shape[1]
    compute_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    class_shape = (1, num_classes) + (1,) * (logits.dim() - 2)
    lb_delta = lb_pos - lb_neg

    valid_mask = labelled_mask(labels, ignore_index).unsqueeze(1)
    lb_index = torch.where(valid_mask, labels.unsqueeze(1), 0).long()
    if check_labels and lb_index.numel():
        low, high = torch.aminmax(lb_index)
        if int(low) < 0 or int(high) >= num_classes:
            raise_bad_labels(labels, num_classes, ignore_index)
    valid = valid_mask.to(compute_dtype)
    if weight is None:
        weight_y = valid
        sum_c = valid * (lb_pos + (num_classes - 1) * lb_neg)
        sum_wx = logits.sum(1, keepdim=True, dtype=compute_dtype) if lb_neg else None
    else:
        weight = weight.to(compute_dtype)
        weight_y = weight[lb_index] * valid
        sum_c = valid * (lb_neg * weight.sum()) + lb_delta * weight_y
        sum_wx = None
        if lb_neg:
            # Before the exp buffer exists, so the temporary does not raise the peak.
            sum_wx = (logits.to(compute_dtype) * weight.view(class_shape)).sum(1, keepdim=True)
    logit_y = logits.gather(1, lb_index).to(compute_dtype)

    max_logit = logits.amax(1, keepdim=True).to(compute_dtype)
    buf = torch.empty_like(logits, dtype=compute_dtype)
    torch.sub(logits, max_logit, out=buf).exp_()
    sum_exp = buf.sum(1, keepdim=True)
    lse = max_logit + sum_exp.log()

    sum_cx = lb_delta * weight_y * logit_y
    if sum_wx is not None:
        sum_cx = sum_cx + lb_neg * valid * sum_wx
    loss_map = torch.where(valid_mask, sum_c * lse - sum_cx, 0.0)

    if reduction == "mean":
        denom = weight_y.sum()
        scale = torch.where(denom > 0, 1.0 / denom, 0.0)
        loss = loss_map.sum() * scale
    else:
        scale = 1.0
        loss = loss_map.sum() if reduction == "sum" else loss_map.squeeze(1)

    if not need_grad:
        return loss, None
    buf.mul_(sum_c * scale / sum_exp)
    buf.scatter_add_(1, lb_index, -(lb_delta * weight_y) * scale)
    if lb_neg and weight is None:
        buf.sub_(valid * scale, alpha=lb_neg)
    elif lb_neg:
        buf.addcmul_(valid * scale, weight.view(class_shape), value=-lb_neg)
    grad = buf if buf.dtype == logits.dtype else buf.to(logits.dtype)
    return loss, grad


def scale_saved_grad(grad: torch.Tensor, factor: torch.Tensor | None) -> torch.Tensor:
    """``grad * factor`` for backward (None: factor 1), in place when autograd frees the graph.

    A graph that is kept (retain_graph, create_graph, torch.compile) gets a new tensor with
    the saved gradient's strides, so a second backward sees the saved gradient unchanged.
    """
    if not _keep_graph():
        return grad if factor is None else grad.mul_(factor)
    if factor is None:
        return grad.clone()
    return torch.mul(grad, factor, out=torch.empty_like(grad))


class LabelSmoothCEFunction(torch.autograd.Function):
    """Autograd wrapper: saves only the forward-computed gradient."""

    @staticmethod
    def forward(ctx, logits, labels, lb_pos, lb_neg, weight, ignore_index, reduction, check_labels):
        with torch.autocast(logits.device.type, enabled=False):
            loss, grad = forward_with_grad(
                logits,
                labels,
                lb_pos,
                lb_neg,
                weight,
                ignore_index,
                reduction,
                need_grad=ctx.needs_input_grad[0],
                check_labels=check_labels,
            )
        ctx.reduction = reduction
        if grad is not None:
            ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        if ctx.reduction == "none":
            grad_output = grad_output.unsqueeze(1)
        elif grad_output.device.type == "cpu" and grad_output.item() == 1.0:
            grad_output = None
        return scale_saved_grad(grad, grad_output), None, None, None, None, None, None, None
