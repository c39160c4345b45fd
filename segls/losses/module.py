"""The loss as an ``nn.Module`` for use as a training criterion, and the criterion a config builds."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from segls.losses.functional import loss_with_options
from segls.losses.lovasz import PlusLovasz
from segls.losses.options import ComputeOptions, LossOptions


def _read_only(group: str, name: str) -> property:
    """A read-only attribute that shows one of the module's options."""
    return property(lambda module: getattr(getattr(module, group), name), doc=f"{group}.{name}")


class LabelSmoothSoftmaxCE(nn.Module):
    """Per-pixel label-smoothing softmax cross-entropy with an ignore label.

    Takes :func:`segls.losses.label_smooth_softmax_ce`'s parameters: ``lb_smooth`` and the
    keywords of :class:`LossOptions` (``lb_pos``, ``lb_neg``, ``ignore_index``, ``reduction``,
    ``weight``, ``check_labels``), then how to compute (``inplace=True``, Triton only,
    overwrites the logits with the gradient). Or ``options``, a LossOptions made already.
    They are checked once, here, so a bad config fails before the first batch and no
    forward checks them again. The class weights are a buffer that follows ``.to()``.
    """

    def __init__(
        self,
        lb_smooth: float | None = None,
        *,
        backend: str = "auto",
        inplace: bool = False,
        upsample: str | None = None,
        align_corners: bool = False,
        options: LossOptions | None = None,
        **loss_options: Any,
    ) -> None:
        super().__init__()
        if options is None:
            options = LossOptions(lb_smooth, **loss_options)
        elif lb_smooth is not None or loss_options:
            raise TypeError("give either options or the loss's settings, not both")
        self.options = options
        self.compute = ComputeOptions(backend, inplace, upsample, align_corners)
        self.register_buffer("weight", options.weight, persistent=False)

    def _apply(self, fn, recurse=True):
        """As nn.Module's (``.to()``, ``.double()``), keeping the options' weight the buffer."""
        super()._apply(fn, recurse)
        self.options = self.options.with_weight(self.weight)
        return self

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of (N, C, d1..dk) logits against (N, d1..dk) integer labels.

        With ``upsample='bilinear'``: (N, C, h, w) logits against (N, H, W) labels.
        """
        return loss_with_options(logits, labels, self.options, self.compute)

    lb_smooth = _read_only("options", "lb_smooth")  # None when lb_pos/lb_neg are given
    lb_pos = _read_only("options", "lb_pos")  # None when lb_smooth is
    lb_neg = _read_only("options", "lb_neg")
    ignore_index = _read_only("options", "ignore_index")
    reduction = _read_only("options", "reduction")
    check_labels = _read_only("options", "check_labels")
    backend = _read_only("compute", "backend")
    inplace = _read_only("compute", "inplace")
    upsample = _read_only("compute", "upsample")
    align_corners = _read_only("compute", "align_corners")

    def extra_repr(self) -> str:
        text = self.options.describe()
        if self.upsample is not None:
            text += f", upsample={self.upsample!r}, align_corners={self.align_corners}"
        return text


def build_criterion(
    options: LossOptions,
    *,
    backend: str = "auto",
    upsample: str | None = None,
    align_corners: bool = False,
    lovasz_weight: float = 0.0,
) -> nn.Module:
    """The cross-entropy with these options, plus ``lovasz_weight`` × Lovász-softmax when > 0.

    The one place a criterion is built from settings: evaluation's (`segls.predict`) and
    training's objective (`segls.train`) both come from here.
    """
    base = LabelSmoothSoftmaxCE(
        options=options, backend=backend, upsample=upsample, align_corners=align_corners
    )
    if lovasz_weight != 0:  # PlusLovasz refuses a negative weight
        return PlusLovasz(base, lovasz_weight, options.ignore_index)
    return base
