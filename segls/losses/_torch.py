"""Torch backend: the gradient is computed during the forward pass and saved alone.

Per valid pixel with label y, the target is c_k = w_k * (lb_neg + (lb_pos - lb_neg) * [k == y])
(w = 1 without class weights), so with s = x - max(x), p = softmax(x) and se = sum_k exp(s_k):

    loss = sum_k c_k * (log se - s_k)
         = sum(c) * log se - (lb_pos - lb_neg) * w_y * s_y - lb_neg * sum_k w_k s_k
    dloss/dx_k = sum(c) * p_k - c_k

Every term of the loss is >= 0 (s <= 0), so float32 adds them without cancellation. The
forward writes the gradient (already scaled by the reduction) into the one full-size buffer
it needs for exp(s) anyway. Per-pixel maps are made as late and freed as early as the maths
allows, so that no more than about two of them live next to that buffer. Backward is a scale
by ``grad_output``, done in place when autograd is about to free the graph, so fwd+bwd holds
a single logits-sized buffer.
"""

from __future__ import annotations

import torch

from segls.losses._composite import differentiable_grad, is_batched, remember_logits
from segls.losses.checks import class_index
from segls.losses.options import LossOptions


def _keep_graph() -> bool:
    """Whether the running backward keeps the graph (retain_graph=True or create_graph=True)."""
    if torch.compiler.is_compiling():
        return True
    getter = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return True if getter is None else bool(getter())


def forward_with_grad(
    logits: torch.Tensor, labels: torch.Tensor, options: LossOptions, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Loss (float32, or float64 for float64 logits) and, if asked, its gradient in logits' dtype."""
    num_classes = logits.shape[1]
    lb_pos, lb_neg = options.targets(num_classes)
    reduction = options.reduction
    compute_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    labels = labels.unsqueeze(1)
    index, ignored = class_index(labels, num_classes, options.ignore_index, options.check_labels)
    max_logit = logits.amax(1, keepdim=True).to(compute_dtype)
    loss_map = logits.gather(1, index).to(compute_dtype).sub_(max_logit)  # s_y
    targets = Targets(ignored, options.weight, index, lb_pos, lb_neg, reduction, compute_dtype)
    del index
    if targets.weight_y is not None:
        loss_map.mul_(targets.weight_y)
    loss_map.mul_(-targets.lb_delta)

    buf = torch.empty_like(logits, dtype=compute_dtype)
    torch.sub(logits, max_logit, out=buf)
    if targets.class_weight is None:
        del max_logit
    if lb_neg:  # - lb_neg * sum_k w_k s_k
        if targets.class_weight is not None:
            buf.mul_(targets.class_weight.view(targets.class_shape(buf)))
        loss_map.add_(buf.sum(1, keepdim=True), alpha=-lb_neg)
        if targets.class_weight is not None:
            torch.sub(logits, max_logit, out=buf)
    max_logit = None
    loss_map.masked_fill_(ignored, 0.0)
    if reduction != "none":
        loss_map = sum_float64(loss_map)
    buf.exp_()
    loss = add_log_sum_exp(loss_map, buf, targets, need_grad)

    if reduction == "mean":
        loss = torch.where(targets.has_weight, loss / targets.safe_denom, 0.0)
    loss = loss.squeeze(1) if reduction == "none" else loss.to(compute_dtype)
    if not need_grad:
        return loss, None
    targets.subtract_label_term(buf, labels)
    grad = buf if buf.dtype == logits.dtype else buf.to(logits.dtype)
    return loss, grad


def sum_float64(values: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """The sum of all elements accumulated in float64, without a float64 copy of them all.

    float32 sums of blocks of ``block`` elements, added in float64: a float32 sum of all the
    per-pixel terms would lose about an ulp of the total.
    """
    flat = values.reshape(-1)
    whole = flat.numel() - flat.numel() % block
    partials = flat[:whole].view(-1, block).sum(1)
    return partials.sum(dtype=torch.float64) + flat[whole:].sum(dtype=torch.float64)


class Targets:
    """The smoothed targets c_k = w_k (lb_neg + lb_delta [k == y]) and the reduction's scale."""

    def __init__(
        self,
        ignored: torch.Tensor,
        weight: torch.Tensor | None,
        index: torch.Tensor,
        lb_pos: float,
        lb_neg: float,
        reduction: str,
        dtype: torch.dtype,
    ) -> None:
        self.ignored, self.lb_neg, self.lb_delta = ignored, lb_neg, lb_pos - lb_neg
        self.class_weight = None if weight is None else weight.to(dtype)
        self.weight_y = None
        if self.class_weight is None:
            denom = (ignored.numel() - torch.count_nonzero(ignored)).double()
        else:
            self.weight_y = self.class_weight[index].masked_fill_(ignored, 0.0)
            denom = sum_float64(self.weight_y)
        self.has_weight = denom > 0
        self.safe_denom = torch.where(self.has_weight, denom, 1.0)
        scale = torch.where(self.has_weight, 1.0 / self.safe_denom, 0.0).to(dtype)
        self.scale = scale if reduction == "mean" else torch.ones_like(scale)  # of the gradient

    @staticmethod
    def class_shape(buf: torch.Tensor) -> tuple[int, ...]:
        return (1, buf.shape[1]) + (1,) * (buf.dim() - 2)

    def sum_c(self, num_classes: int) -> float | torch.Tensor:
        """sum_k c_k per pixel: a number without class weights (times the valid mask)."""
        if self.class_weight is None:
            return self.lb_delta + num_classes * self.lb_neg
        sum_c = torch.where(self.ignored, 0.0, self.lb_neg * self.class_weight.sum())
        return sum_c.add_(self.weight_y, alpha=self.lb_delta)

    def subtract_label_term(self, buf: torch.Tensor, labels: torch.Tensor) -> None:
        """buf_y -= scale * lb_delta * w_y; with unit weights through a zero-size source."""
        index = torch.where(self.ignored, 0, labels).long()
        if self.weight_y is None:
            step = self.scale * -self.lb_delta
            buf.scatter_add_(1, index, step.expand(index.shape))
            buf.narrow(1, 0, 1).masked_fill_(self.ignored, 0.0)  # index 0 stood for them
        else:
            buf.scatter_add_(1, index, self.weight_y.mul_(self.scale * -self.lb_delta))
            self.weight_y = None


def add_log_sum_exp(
    loss: torch.Tensor, buf: torch.Tensor, targets: Targets, need_grad: bool
) -> torch.Tensor:
    """``loss`` + sum(c) * log(se); with need_grad, make buf = exp(s) the gradient.

    That is scale * (sum(c) * p - c) except the label's own term, left to subtract_label_term.
    ``loss`` is the per-pixel map (updated in place) or a float64 scalar.
    """
    ignored, scale = targets.ignored, targets.scale
    sum_exp = buf.sum(1, keepdim=True)
    sum_c = targets.sum_c(buf.shape[1])
    if isinstance(sum_c, float):
        coef = torch.reciprocal(sum_exp).masked_fill_(ignored, 0.0) if need_grad else None
        log_term = sum_exp.log_().masked_fill_(ignored, 0.0)
    else:
        log_term = torch.log(sum_exp).mul_(sum_c).masked_fill_(ignored, 0.0)
        coef = sum_c.div_(sum_exp) if need_grad else None
        sum_c = 1.0
    if loss.dim():
        loss.add_(log_term, alpha=sum_c)
    else:
        loss = loss + sum_float64(log_term) * sum_c
    del sum_exp, log_term
    if coef is None:
        return loss
    coef.mul_(scale * sum_c)
    if not targets.lb_neg:
        buf.mul_(coef)
        return loss
    neg_grad = torch.where(ignored, 0.0, scale * -targets.lb_neg)
    if targets.class_weight is None:
        torch.addcmul(neg_grad, buf, coef, out=buf)
    else:
        buf.mul_(coef)
        buf.addcmul_(neg_grad, targets.class_weight.view(targets.class_shape(buf)))
    return loss


def scale_saved_grad(grad: torch.Tensor, factor: torch.Tensor | None) -> torch.Tensor:
    """``grad * factor`` for backward (None: factor 1), in place when autograd frees the graph.

    A graph that is kept (retain_graph, torch.compile) gets a new tensor with the saved
    gradient's strides, so a second backward sees the saved gradient unchanged; a batched
    factor (``is_grads_batched``) gets a plain product.
    """
    if factor is not None and is_batched(factor):
        return grad * factor
    if not _keep_graph():
        return grad if factor is None else grad.mul_(factor)
    if factor is None:
        return grad.clone()
    return torch.mul(grad, factor, out=torch.empty_like(grad))


class LabelSmoothCEFunction(torch.autograd.Function):
    """Autograd wrapper: saves the forward-computed gradient, the labels and a weak logits ref."""

    @staticmethod
    def forward(ctx, logits, labels, options):
        with torch.autocast(logits.device.type, enabled=False):
            loss, grad = forward_with_grad(logits, labels, options, ctx.needs_input_grad[0])
        ctx.reduction = options.reduction
        if grad is not None:
            ctx.save_for_backward(grad, labels)
            remember_logits(ctx, logits, options)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grad, labels = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the gradient must be differentiable
            grad = differentiable_grad(ctx, labels, grad_output)
        elif ctx.reduction == "none":
            grad = scale_saved_grad(grad, grad_output.unsqueeze(1))
        else:
            grad = scale_saved_grad(grad, None if is_one(grad_output) else grad_output)
        return grad, None, None


def is_one(grad_output: torch.Tensor) -> bool:
    """Whether a scalar upstream gradient is 1, found without a device sync."""
    cheap = grad_output.device.type == "cpu" and not is_batched(grad_output)
    return cheap and grad_output.item() == 1.0
