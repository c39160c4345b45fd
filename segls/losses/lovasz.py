"""Lovász-softmax: a convex surrogate of the per-class Jaccard (IoU) loss.

Berman, Rannen Triki and Blaschko, "The Lovász-Softmax loss", CVPR 2018. For each class c,
the pixels' errors |[y = c] - p_c| are sorted in decreasing order and dotted with the
discrete gradient of the Jaccard loss along that order; the loss is the mean over the
classes present in the labels (the paper's ``classes='present'``), computed over the whole
batch at once.

All classes are sorted in one call and no tensor is indexed by a mask, so there is no
host sync: ignored pixels get error 0 and no foreground, which puts them after every pixel
with a non-zero error, where they add nothing to the loss or to the other pixels' weights.
The sort is O(P log P) for P pixels per class: meant for training crops, not for whole
megapixel batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segls.losses._label_dtype import signed_labels
from segls.losses.checks import (
    check_inputs,
    check_labels_outside_graph,
    in_class_range,
    labelled_mask,
    raise_bad_labels,
)
from segls.losses.functional import check_outside_graph, loss_with_options
from segls.losses.rules import lovasz_weight_problem


def lovasz_softmax(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = 255,
    check_labels: bool = True,
) -> torch.Tensor:
    """Lovász-softmax loss of logits (N, C, d1..dk) against labels (N, d1..dk), a scalar.

    Averaged over the classes that occur in the non-ignored labels; 0 (with a zero gradient)
    when every label is ignore_index. ``check_labels`` raises a ValueError naming labels
    outside [0, C) that are not ignore_index (one host sync); unchecked, they count as
    ignored.
    """
    check_inputs(logits, labels)
    num_classes = logits.shape[1]
    if check_labels and torch.compiler.is_compiling():  # the one graph break, before any op
        check_labels_outside_graph(labels, num_classes, ignore_index)
        check_labels = False
    labels = signed_labels(labels, num_classes, ignore_index, check_labels).reshape(-1)
    valid = labelled_mask(labels, ignore_index)
    in_range = in_class_range(labels, num_classes)
    if check_labels and bool((valid & ~in_range).any()):
        raise_bad_labels(labels, num_classes, ignore_index)
    valid = valid & in_range
    probs = logits.float().softmax(dim=1).movedim(1, -1).reshape(-1, num_classes)
    classes = torch.arange(num_classes, device=logits.device)
    foreground = ((labels[:, None] == classes) & valid[:, None]).float()  # P × C
    errors = (foreground - probs).abs() * valid[:, None]
    errors_sorted, order = errors.sort(dim=0, descending=True)
    foreground_sorted = foreground.gather(0, order)
    totals = foreground_sorted.sum(dim=0)  # pixels of each class
    intersection = totals - foreground_sorted.cumsum(dim=0)
    union = totals + (1.0 - foreground_sorted).cumsum(dim=0)
    jaccard = 1.0 - intersection / union
    weights = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    per_class = (errors_sorted * weights).sum(dim=0)
    present = (totals > 0).float()
    return (per_class * present).sum() / present.sum().clamp(min=1.0)


class LovaszSoftmax(nn.Module):
    """:func:`lovasz_softmax` as a module."""

    def __init__(self, ignore_index: int = 255, check_labels: bool = True) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)
        self.check_labels = bool(check_labels)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return lovasz_softmax(logits, labels, self.ignore_index, self.check_labels)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}"


class PlusLovasz(nn.Module):
    """``base(logits, labels) + weight * lovasz_softmax(logits, labels)``.

    The labels are checked once, by ``base`` (the cross-entropy); the Lovász term treats
    labels outside [0, C) as ignored, as an unchecked cross-entropy does. When ``base``
    upsamples the logits (``upsample='bilinear'``), the Lovász term is computed on the logits
    ``F.interpolate`` upsamples to the labels' size with the base's ``align_corners``: it
    sorts every full-resolution pixel, so it needs them all at once.
    """

    def __init__(self, base: nn.Module, weight: float, ignore_index: int = 255) -> None:
        super().__init__()
        problem = lovasz_weight_problem(weight)
        if problem is not None:
            raise problem
        self.base = base
        self.weight = float(weight)
        self.ignore_index = int(ignore_index)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        options = getattr(self.base, "options", None)  # the cross-entropy's LossOptions
        if torch.compiler.is_compiling() and options is not None and options.check_labels:
            # The label check's graph break in this frame: in the base's, dynamo would resume
            # the Lovász term below in a graph of its own, a second break.
            check_outside_graph(logits, labels, self.base.compute, options.ignore_index)
            options = options.variant(check_labels=False)
            loss = loss_with_options(logits, labels, options, self.base.compute)
        else:
            loss = self.base(logits, labels)
        upsample = getattr(self.base, "upsample", None)
        if upsample is not None:
            logits = F.interpolate(
                logits, size=labels.shape[-2:], mode=upsample, align_corners=self.base.align_corners
            )
        return loss + self.weight * lovasz_softmax(
            logits, labels, self.ignore_index, check_labels=False
        )

    def extra_repr(self) -> str:
        return f"weight={self.weight}, ignore_index={self.ignore_index}"
