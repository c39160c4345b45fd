"""Which loss settings are valid: the rules, in pure Python.

This module imports no torch, so that the config checks its loss settings with these very
rules before torch loads (`settings_problems`); `LossOptions` applies them when it is made.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

REDUCTIONS = ("mean", "sum", "none")
UPSAMPLE_MODES = ("bilinear",)


class LossOptionError(ValueError):
    """A loss setting that breaks a rule: ``option`` names it, ``advice`` says what to do.

    The advice names other options as ``{lb_neg}``; ``advice(name)`` fills them in with
    ``name(option)``, so that the config can name its own keys.
    """

    def __init__(self, message: str, option: str, advice: str) -> None:
        super().__init__(message)
        self.option = option
        self._advice = advice

    def advice(self, name: Callable[[str], str] = str) -> str:
        """What to do, with the other options it names written as ``name(option)``."""
        return self._advice.format_map(_Names(name))


class _Names(dict):
    """A mapping that names each option it is asked for by a function."""

    def __init__(self, name: Callable[[str], str]) -> None:
        super().__init__()
        self.name = name

    def __missing__(self, option: str) -> str:
        return self.name(option)


def smoothing_problem(lb_smooth: float | None) -> LossOptionError | None:
    """The error for an ε outside [0, 1), or None (also for ε = None: the default)."""
    if lb_smooth is None or 0.0 <= lb_smooth < 1.0:
        return None
    return LossOptionError(
        f"lb_smooth must be in [0, 1); got {lb_smooth}",
        "lb_smooth",
        "use a value in [0, 1); 0 turns smoothing off",
    )


def pair_problem(lb_pos: float | None, lb_neg: float | None) -> LossOptionError | None:
    """The error for explicit targets that are not both given, not >= 0 or out of order."""
    if lb_pos is None or lb_neg is None:
        return LossOptionError(
            f"lb_pos and lb_neg go together; got lb_pos={lb_pos}, lb_neg={lb_neg}",
            "lb_pos" if lb_neg is None else "lb_neg",
            "set {lb_pos} and {lb_neg} together, or neither",
        )
    if not (lb_neg >= 0 and lb_pos >= 0):
        return LossOptionError(
            f"lb_pos and lb_neg must be >= 0; got lb_pos={lb_pos}, lb_neg={lb_neg}",
            "lb_pos" if not lb_pos >= 0 else "lb_neg",
            "use a target >= 0",
        )
    if lb_pos < lb_neg:
        return LossOptionError(
            f"lb_pos must be >= lb_neg; got lb_pos={lb_pos} < lb_neg={lb_neg}",
            "lb_pos",
            f"the true-class target must be >= {{lb_neg}} = {lb_neg}",
        )
    return None


def weight_problem(values: Sequence[float], num_classes: int | None) -> LossOptionError | None:
    """The error for class weights that are not one per class, finite and >= 0, or None."""
    if num_classes is not None and len(values) != num_classes:
        return LossOptionError(
            f"weight must have one entry per class: expected shape ({num_classes},), "
            f"got ({len(values)},)",
            "weight",
            f"give one per class ({num_classes} classes)",
        )
    bad = [value for value in values if not (value >= 0 and value != math.inf)]
    if bad:
        return LossOptionError(
            f"weight must be finite and >= 0; got {bad}",
            "weight",
            "weights must be finite and >= 0",
        )
    return None


def lovasz_weight_problem(lovasz_weight: float) -> LossOptionError | None:
    """The error for a Lovász term's weight that is not >= 0 (0 leaves the term out), or None."""
    if lovasz_weight >= 0:
        return None
    return LossOptionError(
        f"the Lovász weight must be >= 0; got {lovasz_weight}", "lovasz_weight", "use 0 or more"
    )


def settings_problems(
    lb_smooth: float | None,
    lb_pos: float | None,
    lb_neg: float | None,
    weight: Sequence[float] | None = None,
    num_classes: int | None = None,
    lovasz_weight: float = 0.0,
) -> list[LossOptionError]:
    """Every rule that the settings of `LossOptions.from_settings` and the Lovász term break."""
    problems = [smoothing_problem(lb_smooth), lovasz_weight_problem(lovasz_weight)]
    if lb_pos is not None or lb_neg is not None:
        problems.append(pair_problem(lb_pos, lb_neg))
    if weight is not None:
        problems.append(weight_problem(weight, num_classes))
    return [problem for problem in problems if problem is not None]
