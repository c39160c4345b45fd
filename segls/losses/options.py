"""The loss's options as one value, made and checked once and passed to every backend.

No torch at import (the rules are `segls.losses.rules`); a class weight is turned into a
checked tensor by `segls.losses.checks`, imported (and with it torch) only when one is given.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from segls.losses.names import BACKENDS, DEFAULT_LB_SMOOTH
from segls.losses.rules import (
    REDUCTIONS,
    UPSAMPLE_MODES,
    LossOptionError,
    pair_problem,
    smoothing_problem,
)

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, eq=False)
class LossOptions:
    """What the label-smoothing cross-entropy computes, checked once, when it is made.

    The targets are either ``lb_smooth`` = ε (None: 0.1; lb_pos = 1 − ε + ε/C, lb_neg = ε/C,
    PyTorch's ``label_smoothing``) or ``lb_pos``/``lb_neg``, never both. ``weight`` becomes a
    1-D float tensor (its length is checked against the logits' C at each call). Every
    backend takes this one value; `targets` gives the normalised for C classes. A bad value
    raises a LossOptionError (a ValueError) that names it.
    """

    lb_smooth: float | None = None
    lb_pos: float | None = None
    lb_neg: float | None = None
    weight: torch.Tensor | Sequence[float] | None = None
    ignore_index: int = 255
    reduction: str = "mean"
    check_labels: bool = True

    def __post_init__(self) -> None:
        explicit = self.lb_pos is not None or self.lb_neg is not None
        if explicit and self.lb_smooth is not None:
            raise LossOptionError(
                f"set either lb_smooth (got {self.lb_smooth}) or lb_pos/lb_neg "
                f"(got {self.lb_pos}/{self.lb_neg}), not both",
                "lb_smooth",
                "set either {lb_smooth} or {lb_pos}/{lb_neg}, not both",
            )
        lb_smooth = DEFAULT_LB_SMOOTH if self.lb_smooth is None else float(self.lb_smooth)
        problem = (
            pair_problem(self.lb_pos, self.lb_neg) if explicit else smoothing_problem(lb_smooth)
        )
        if problem is not None:
            raise problem
        if explicit:
            normalised = {"lb_pos": float(self.lb_pos), "lb_neg": float(self.lb_neg)}
        else:
            normalised = {"lb_smooth": lb_smooth}
        if self.reduction not in REDUCTIONS:
            raise LossOptionError(
                f"reduction must be one of {REDUCTIONS}; got {self.reduction!r}",
                "reduction",
                f"use one of {', '.join(REDUCTIONS)}",
            )
        normalised["ignore_index"] = int(self.ignore_index)
        normalised["check_labels"] = bool(self.check_labels)
        if self.weight is not None:
            from segls.losses.checks import weight_tensor  # torch, only for class weights

            normalised["weight"] = weight_tensor(self.weight)
        for name, value in normalised.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_settings(
        cls,
        lb_smooth: float | None,
        lb_pos: float | None = None,
        lb_neg: float | None = None,
        **rest: Any,
    ) -> LossOptions:
        """Options from settings whose ε always has a value (a config's default).

        An explicit lb_pos/lb_neg pair replaces ε; ε is checked either way.
        """
        problem = smoothing_problem(lb_smooth)
        if problem is not None:
            raise problem
        if lb_pos is not None or lb_neg is not None:
            return cls(None, lb_pos, lb_neg, **rest)
        return cls(lb_smooth, **rest)

    def targets(self, num_classes: int) -> tuple[float, float]:
        """(lb_pos, lb_neg) for C classes."""
        if self.lb_smooth is None:
            return self.lb_pos, self.lb_neg
        eps = self.lb_smooth
        return 1.0 - eps + eps / num_classes, eps / num_classes

    def with_weight(self, weight: torch.Tensor | None) -> LossOptions:
        """The same options with the class weights moved or cast (``.to``): not checked again."""
        return self if weight is self.weight else self._changed(weight=weight)

    def variant(
        self, *, reduction: str | None = None, check_labels: bool | None = None
    ) -> LossOptions:
        """The same options with another reduction or the label check off (not checked again).

        For the backends' own partial passes, which sum what they reduce later and read
        labels already checked.
        """
        changes = {"reduction": reduction, "check_labels": check_labels}
        return self._changed(**{name: v for name, v in changes.items() if v is not None})

    def _changed(self, **changes: Any) -> LossOptions:
        changed = copy.copy(self)
        for name, value in changes.items():
            object.__setattr__(changed, name, value)
        return changed

    def describe(self) -> str:
        """The options as a module's repr shows them."""
        if self.lb_smooth is None:
            form = f"lb_pos={self.lb_pos}, lb_neg={self.lb_neg}"
        else:
            form = f"lb_smooth={self.lb_smooth}"
        return f"{form}, ignore_index={self.ignore_index}, reduction={self.reduction!r}"


@dataclass(frozen=True)
class ComputeOptions:
    """How the loss is computed: backend, in-place gradient, fused upsampling; checked once."""

    backend: str = "auto"
    inplace: bool = False
    upsample: str | None = None
    align_corners: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}; got {self.backend!r}")
        if self.upsample is not None and self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be None or 'bilinear'; got {self.upsample!r}")
        if not isinstance(self.align_corners, bool):
            raise TypeError(f"align_corners must be True or False; got {self.align_corners!r}")
        if self.upsample is not None and self.inplace:
            raise ValueError(
                "inplace=True cannot be combined with upsample='bilinear': the gradient of each "
                "low-resolution logit is summed from many full-resolution pixels that read it, "
                "so it cannot overwrite the logits while they are read. Pass inplace=False"
            )
