"""The loss as an ``nn.Module`` for use as a training criterion."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segls.losses._upsample import check_upsample_options
from segls.losses.checks import (
    BACKENDS,
    DEFAULT_LB_SMOOTH,
    REDUCTIONS,
    check_weight,
    resolve_targets,
)
from segls.losses.functional import label_smooth_softmax_ce


class LabelSmoothSoftmaxCE(nn.Module):
    """Per-pixel label-smoothing softmax cross-entropy with an ignore label.

    See :func:`segls.losses.label_smooth_softmax_ce` for the parameters (``inplace=True``, Triton
    only, overwrites the logits with the gradient). Arguments are checked here, at construction,
    so a bad config fails before the first batch.
    """

    def __init__(
        self,
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
    ) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
        num_classes = None if weight is None else len(weight)
        resolve_targets(num_classes or 2, lb_smooth, lb_pos, lb_neg)
        check_upsample_options(upsample, align_corners, inplace)
        self.lb_smooth = lb_smooth
        self.lb_pos = lb_pos
        self.lb_neg = lb_neg
        self.ignore_index = int(ignore_index)
        self.reduction = reduction
        self.check_labels = check_labels
        self.backend = backend
        self.inplace = inplace
        self.upsample = upsample
        self.align_corners = align_corners
        self.register_buffer("weight", check_weight(weight, num_classes), persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of (N, C, d1..dk) logits against (N, d1..dk) integer labels.

        With ``upsample='bilinear'``: (N, C, h, w) logits against (N, H, W) labels.
        """
        return label_smooth_softmax_ce(
            logits,
            labels,
            self.lb_smooth,
            lb_pos=self.lb_pos,
            lb_neg=self.lb_neg,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            weight=self.weight,
            check_labels=self.check_labels,
            backend=self.backend,
            inplace=self.inplace,
            upsample=self.upsample,
            align_corners=self.align_corners,
        )

    def extra_repr(self) -> str:
        if self.lb_pos is not None:
            form = f"lb_pos={self.lb_pos}, lb_neg={self.lb_neg}"
        else:
            lb_smooth = DEFAULT_LB_SMOOTH if self.lb_smooth is None else self.lb_smooth
            form = f"lb_smooth={lb_smooth}"
        text = f"{form}, ignore_index={self.ignore_index}, reduction={self.reduction!r}"
        if self.upsample is not None:
            text += f", upsample={self.upsample!r}, align_corners={self.align_corners}"
        return text
