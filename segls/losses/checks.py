"""Argument checks for the loss: each error names the offending value."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch

from segls.losses._label_dtype import signed_labels
from segls.losses.rules import weight_problem

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def weight_tensor(weight: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Class weights as a 1-D float tensor, checked for sign and finiteness (on the CPU).

    Their length is checked against the logits at each call (`check_weight_shape`).
    """
    weight = torch.as_tensor(weight)
    check_weight_shape(weight, None)
    if weight.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            "weight must not require grad: class weights are constants of the loss, which "
            "gives no gradient for them (F.cross_entropy refuses them too); pass weight.detach()"
        )
    if not weight.is_floating_point():
        weight = weight.float()
    if weight.device.type == "cpu":
        problem = weight_problem(weight.tolist(), None)
        if problem is not None:
            raise problem
    return weight


def check_weight_shape(weight: torch.Tensor, num_classes: int | None) -> None:
    """Raise unless the class weights are 1-D with one entry per class (when C is known)."""
    if weight.dim() != 1 or (num_classes is not None and weight.numel() != num_classes):
        raise ValueError(
            f"weight must have one entry per class: expected shape ({num_classes},), "
            f"got {tuple(weight.shape)}"
        )


def check_inputs(logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Shapes, dtypes and devices of logits (N, C, d1..dk) and labels (N, d1..dk)."""
    if not isinstance(logits, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError(
            f"logits and labels must be tensors; got {type(logits).__name__} "
            f"and {type(labels).__name__}"
        )
    if logits.dtype not in FLOAT_DTYPES:
        raise TypeError(f"logits must be float16, bfloat16, float32 or float64; got {logits.dtype}")
    if logits.dim() < 2:
        raise ValueError(
            f"logits must have shape (N, C, d1, ..., dk) with at least 2 dimensions; "
            f"got shape {tuple(logits.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(
            f"labels must hold integer class indices; got dtype {labels.dtype} "
            "(convert with labels.long() after checking they are whole numbers)"
        )
    if logits.shape[1] < 2:
        raise ValueError(f"need at least 2 classes; logits have C = {logits.shape[1]}")
    expected = (logits.shape[0],) + tuple(logits.shape[2:])
    if tuple(labels.shape) != expected:
        raise ValueError(
            f"labels shape {tuple(labels.shape)} does not match logits shape "
            f"{tuple(logits.shape)}: expected labels of shape {expected}. Resize the logits "
            "with F.interpolate(logits, size=labels.shape[-2:], mode='bilinear') or the "
            "labels with nearest-neighbour interpolation"
        )
    if labels.device != logits.device:
        raise ValueError(f"logits are on {logits.device} but labels on {labels.device}")


def labelled_mask(labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """``labels != ignore_index`` as for int64 labels: an index the dtype cannot hold matches none.

    Comparing in the labels' own dtype would wrap the index first (-100 is 156 as uint8).
    """
    info = torch.iinfo(labels.dtype)
    if info.min <= ignore_index <= info.max:
        return labels != ignore_index
    return torch.ones_like(labels, dtype=torch.bool)


def in_class_range(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(labels >= 0) & (labels < num_classes)``, without wrapping C into a narrow dtype."""
    in_range = labels >= 0
    if num_classes <= torch.iinfo(labels.dtype).max:
        in_range &= labels < num_classes
    return in_range


def class_index(
    labels: torch.Tensor, num_classes: int, ignore_index: int, check_labels: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The labels as an int64 class index (0 where ignored) and the mask of ignored pixels.

    Labels outside [0, C) other than ignore_index raise raise_bad_labels' ValueError (one
    min/max reduction, a host sync on GPU) or, with ``check_labels=False``, are ignored too.
    """
    valid = labelled_mask(labels, ignore_index)
    if not check_labels:
        valid &= in_class_range(labels, num_classes)
    index = torch.where(valid, labels, 0)
    if check_labels and index.numel():
        low, high = torch.aminmax(index)
        if int(low) < 0 or int(high) >= num_classes:
            raise_bad_labels(labels, num_classes, ignore_index)
    return index.long(), valid.logical_not_()


def raise_bad_labels(labels: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """Raise the ValueError naming the labels outside [0, C) that are not ignore_index."""
    in_use = torch.where(labelled_mask(labels, ignore_index), labels.long(), 0)
    values = torch.unique(in_use[(in_use < 0) | (in_use >= num_classes)]).tolist()
    shown = ", ".join(str(v) for v in values[:10]) + (", ..." if len(values) > 10 else "")
    raise ValueError(
        f"labels contain {shown} but C = {num_classes}: labels must be in [0, {num_classes - 1}] "
        f"or equal ignore_index={ignore_index}"
    )


LABEL_CHECK_BREAK = (
    "segls' label check reads the labels' min/max on the host, outside the graph (one graph "
    "break, one host sync on GPU); pass check_labels=False for fullgraph=True"
)


def outside_graph(fn: Callable[..., None]) -> Callable[..., None]:
    """`fn` run eagerly under torch.compile (``torch.compiler.disable``, one graph break).

    The disabled function is made at the first call, not at import: ``torch.compiler.disable``
    imports dynamo (and triton), which a loss used without compile must not pay for.
    """
    disabled: Callable[..., None] | None = None

    @functools.wraps(fn)
    def call(*args: object, **kwargs: object) -> None:
        nonlocal disabled
        if disabled is None:
            disabled = torch.compiler.disable(fn, reason=LABEL_CHECK_BREAK)
        disabled(*args, **kwargs)

    return call


@outside_graph
def check_labels_outside_graph(labels: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """The label check under torch.compile, run eagerly: raise_bad_labels' ValueError.

    It names the values and raises before the rest of the graph uses them, at the cost of one
    graph break; a device-side assert (torch._assert_async) could not name them, and on CUDA
    it would end the process's CUDA context.
    """
    labels = signed_labels(labels, num_classes, ignore_index, check_labels=True)
    class_index(labels, num_classes, ignore_index, check_labels=True)
