"""The loss checked against ``F.cross_entropy`` in float64: options, layouts, the comparison.

The reference is PyTorch's own cross-entropy on the same values upcast to float64 (for
lb_pos/lb_neg, the dense reference of `benchmarks.reference`, which the tests use too),
computed one image (or one block of rows) at a time so that even a tensor of more than 2³¹
elements needs little memory for it. Inputs and tolerances are `benchmarks.reference`'s, as
in the tests: the loss within ``VALUE_TOL`` (relative and absolute), the gradient within
``GRAD_TOL[dtype]`` of the largest reference gradient (plus 1e-7).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from benchmarks.reference import GRAD_TOL, IGNORE, VALUE_TOL, dense_loss
from segls.losses import label_smooth_softmax_ce

__all__ = ["LossCase", "arrange", "check_backend", "compare"]

EPS = 0.1
# What backward receives: 1 for loss.backward(); with float16, the gradient scaler's initial
# scale, as in fp16 training (a gradient saved with the 1/N of the mean in float16 underflows).
UPSTREAM = {torch.float16: 65536.0}
CHUNK_ELEMENTS = 2**26  # float64 reference elements per chunk (512 MiB)


@dataclass(frozen=True)
class LossCase:
    """The loss's options for one check; `lb` (lb_pos, lb_neg) replaces ε = 0.1 when given."""

    weighted: bool = False
    lb: tuple[float, float] | None = None
    check_labels: bool = True
    inplace: bool = False

    def describe(self) -> str:
        """The options in words, for the report."""
        parts = [f"lb_pos/lb_neg={self.lb}" if self.lb else f"ε={EPS}"]
        parts += ["weights"] if self.weighted else []
        parts += [] if self.check_labels else ["check_labels=False"]
        parts += ["inplace"] if self.inplace else []
        return ", ".join(parts)


def arrange(values: torch.Tensor, layout: str) -> torch.Tensor:
    """A fresh copy of `values` laid out as contiguous, channels_last, or a strided view."""
    if layout == "channels_last":
        return values.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # every other element of the last dim: evenly strided, not dense
        return torch.repeat_interleave(values, 2, dim=-1)[..., ::2]
    return values.clone()


def _chunks(shape: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """Index tuples covering the logits: one image each, or blocks of rows for one image."""
    if shape[0] > 1 or len(shape) < 3:
        return [(slice(i, i + 1),) for i in range(shape[0])]
    rows = max(1, CHUNK_ELEMENTS // max(1, shape[1] * int(torch.tensor(shape[3:]).prod())))
    return [(slice(0, 1), slice(None), slice(r, r + rows)) for r in range(0, shape[2], rows)]


def _reference_sum(x: torch.Tensor, labels: torch.Tensor, case: LossCase, weight) -> torch.Tensor:
    """Summed loss of float64 logits `x` by F.cross_entropy (the dense reference for `lb`)."""
    if case.lb is None:
        return F.cross_entropy(
            x, labels, weight=weight, ignore_index=IGNORE, label_smoothing=EPS, reduction="sum"
        )
    return dense_loss(x, labels, *case.lb, weight, reduction="sum")


def compare(
    values: torch.Tensor,
    labels: torch.Tensor,
    loss: torch.Tensor,
    grad: torch.Tensor,
    case: LossCase,
    upstream: float,
) -> dict:
    """Loss and gradient (for `upstream` fed to backward) against the float64 reference.

    Labels outside [0, C) count as ignored, as the unchecked loss treats them. Returns the
    errors as fractions of their tolerances (≤ 1 passes) and the reference loss.
    """
    num_classes = values.shape[1]
    labels = torch.where((labels >= 0) & (labels < num_classes), labels, IGNORE)
    valid = labels != IGNORE
    weight = _weight(num_classes, values.device).double() if case.weighted else None
    safe = torch.where(valid, labels, 0)
    denom = (weight[safe] * valid).sum() if weight is not None else valid.sum().double()
    scale = upstream / denom if denom > 0 else torch.zeros((), dtype=torch.float64)
    total = torch.zeros((), dtype=torch.float64, device=values.device)
    grad_err = torch.zeros_like(total)
    grad_max = torch.zeros_like(total)
    for index in _chunks(tuple(values.shape)):
        x = values[index].double().requires_grad_()
        chunk_sum = _reference_sum(x, labels[(index[0], *index[2:])], case, weight)
        (chunk_grad,) = torch.autograd.grad(chunk_sum, x)
        chunk_grad = chunk_grad * scale
        grad_max = torch.maximum(grad_max, chunk_grad.abs().max())
        grad_err = torch.maximum(grad_err, (grad[index].double() - chunk_grad).abs().max())
        total += chunk_sum.detach()
    reference = total / denom if denom > 0 else total * 0
    value_tol = VALUE_TOL + VALUE_TOL * reference.abs()
    grad_tol = GRAD_TOL[values.dtype] * grad_max + 1e-7
    return {
        "loss": reference.item(),
        "loss err/tol": ((loss.double() - reference).abs() / value_tol).item(),
        "grad err/tol": (grad_err / grad_tol).item(),
    }


def _weight(num_classes: int, device: torch.device) -> torch.Tensor:
    """The class weights of a weighted check: 0.2 to 2.0."""
    return torch.linspace(0.2, 2.0, num_classes, device=device)


def check_backend(
    values: torch.Tensor, labels: torch.Tensor, backend: str, layout: str, case: LossCase
) -> dict:
    """One backend's loss and gradient on `values` laid out as `layout`, against the reference."""
    upstream = UPSTREAM.get(values.dtype, 1.0)
    logits = arrange(values, layout).requires_grad_()
    strides = logits.stride()
    options = {"lb_pos": case.lb[0], "lb_neg": case.lb[1]} if case.lb else {"lb_smooth": EPS}
    weight = _weight(values.shape[1], values.device) if case.weighted else None
    loss = label_smooth_softmax_ce(
        logits, labels, **options, weight=weight, backend=backend,
        check_labels=case.check_labels, inplace=case.inplace,
    )  # fmt: skip
    loss.backward(torch.tensor(upstream, device=loss.device))
    result = compare(values, labels, loss.detach(), logits.grad, case, upstream)
    fails = [name for name in ("loss err/tol", "grad err/tol") if not result[name] <= 1]
    if case.inplace and not torch.equal(logits.detach(), logits.grad):
        fails.append("the logits do not hold the gradient after an inplace loss")
    if layout != "strided" and logits.grad.stride() != strides:
        fails.append(f"gradient strides {logits.grad.stride()} != logits' {strides}")
    result["status"] = f"FAIL: {'; '.join(fails)}" if fails else "ok"
    return result
