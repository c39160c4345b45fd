"""Which config values are allowed: choices, minimums, ranges and relations between keys.

`check` raises one ConfigError that lists every value of a Config that fails a check, each
with the file or override that set it and what to do instead.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from segls import ConfigError
from segls.config.convert import show
from segls.config.model_checks import model_checks
from segls.config.schema import OPTIMIZER_TYPES, Config
from segls.data.names import CITYSCAPES_LABELS, LAYOUT_NAMES, SCALINGS
from segls.losses.names import BACKENDS
from segls.losses.rules import settings_problems
from segls.models.names import (
    LOSS_UPSAMPLE,
    MODES,
    RESERVED_KWARGS,
    fused_clash,
    fused_without_head_upsampling,
    has_head_upsampling,
)
from segls.runtime.names import AMP_MODES

__all__ = ["check", "lookup"]

# The allowed values of each choice, exported by the package that uses the value (from a
# names module that imports nothing heavy, so that a config is checked before torch loads).
_CHOICES = {
    "data.format": LAYOUT_NAMES,
    "data.cityscapes_labels": CITYSCAPES_LABELS,
    "data.scaling": SCALINGS,
    "loss.backend": BACKENDS,
    "loss.upsample": LOSS_UPSAMPLE,
    "optimizer.type": OPTIMIZER_TYPES,
    "runtime.amp": AMP_MODES,
    "eval.mode": MODES,
}
_MINIMUM = {
    "data.in_channels": 1,
    "data.batch_size": 1,
    "data.val_batch_size": 1,
    "data.repeat": 1,
    "data.num_workers": 0,
    "optimizer.weight_decay": 0,
    "schedule.max_iters": 1,
    "schedule.power": 0,
    "schedule.eval_interval": 1,
    "schedule.checkpoint_interval": 1,
    "schedule.log_interval": 1,
    "runtime.num_threads": 0,
    "runtime.vis_samples": 0,
    "eval.calibration_bins": 1,
    "optimizer.max_nonfinite_steps": 1,
}
_IN_UNIT_INTERVAL = (
    "data.hflip",
    "data.vflip",
    "data.rotate90",
    "data.photometric",
    "data.class_crop",
    "loss.lb_pos",
    "loss.lb_neg",
    "schedule.warmup_ratio",
)
_LOSS_KEYS = {  # the config key of each loss option (segls.losses.LossOptions)
    "lb_smooth": "loss.lb_smooth",
    "lb_pos": "loss.lb_pos",
    "lb_neg": "loss.lb_neg",
    "weight": "loss.class_weight",
    "lovasz_weight": "loss.lovasz_weight",
}
# Upper bounds on what no run can use, so that a slip of the keyboard fails at load rather
# than as a hang or an allocation failure later. max_iters: a billion iterations is four months
# at 100 iterations/s, and beyond 2**53 the schedule's float arithmetic loses iterations.
# A crop side of 16,384 pixels is 3 GiB per float image in a batch; a scale factor of 10 turns
# a 2,048-pixel image into a 20,480-pixel one (5 GiB of float pixels) and no recipe needs more.
MAX_ITERS = 10**9
MAX_CROP_SIDE = 16_384
MAX_SCALE = 10.0
_NON_EMPTY = ("data.root", "data.train_split", "data.val_split", "model.arch", "model.encoder")
_DEVICE_RE = re.compile(r"auto|cpu|cuda(?::[0-9]+)?")


def lookup(cfg: Config, key: str) -> Any:
    """The value at a key path such as "name", "data.mean" or "model.kwargs.classes"."""
    section, *path = key.split(".")
    value = getattr(cfg, section)
    if path:
        value = getattr(value, path[0])
    return value[path[1]] if len(path) > 1 else value


def _in_unit(value: float | None, *, upper_open: bool = False) -> bool:
    """Whether value is None or in [0, 1] ([0, 1) with upper_open)."""
    return value is None or 0.0 <= value < 1.0 or (value == 1.0 and not upper_open)


def _special_checks(cfg: Config) -> Iterable[tuple[str, bool, str]]:
    """(key, ok, what to do) for checks beyond the tables: lengths, ranges, relations between keys."""
    data, opt, sched = cfg.data, cfg.optimizer, cfg.schedule
    folder_ok = "/" not in cfg.name and "\\" not in cfg.name and cfg.name not in (".", "..")
    yield "name", folder_ok, 'use a folder name without / (or \\), or "" for the file\'s stem'
    classes, channels = data.num_classes, data.in_channels
    per_class = f"one per class (data.num_classes = {classes})"
    per_channel = f"give one value per input channel (data.in_channels = {channels})"
    yield "data.num_classes", classes >= 2, "use 2 or more (binary: background + foreground)"
    yield "data.class_names", len(data.class_names) in (0, classes), f"give {per_class}, or []"
    repeated = sorted({name for name in data.class_names if data.class_names.count(name) > 1})
    yield "data.class_names", not repeated, f"give each class its own name ({repeated} repeat)"
    yield "data.palette", len(data.palette) in (0, classes), f"give {per_class}, or []"
    rgb_ok = all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in data.palette)
    yield "data.palette", rgb_ok, "write each colour as [r, g, b] with values in 0..255"
    lo, hi = (list(data.percentiles) + [0.0, 0.0])[:2]
    pct_ok = len(data.percentiles) == 2 and 0 <= lo < hi <= 100
    yield "data.percentiles", pct_ok, "give [low, high] with 0 <= low < high <= 100, e.g. [1, 99.8]"
    yield "data.mean", len(data.mean) == channels, per_channel
    yield "data.std", len(data.std) == channels, per_channel
    yield "data.std", all(s > 0 for s in data.std), "every std must be > 0"
    collides = 0 <= data.ignore_index < classes
    yield "data.ignore_index", not collides, f"use a value outside 0..{classes - 1}, e.g. 255"
    crop_ok = len(data.crop_size) == 2 and min(data.crop_size) > 0
    yield "data.crop_size", crop_ok, "give [height, width] as two positive ints"
    crop_fits = max(data.crop_size, default=0) <= MAX_CROP_SIDE
    yield "data.crop_size", crop_fits, f"use at most {MAX_CROP_SIDE} pixels a side"
    low, high = (data.scale_range + [0.0, 0.0])[:2]
    scale_ok = len(data.scale_range) == 2 and 0 < low <= high
    yield "data.scale_range", scale_ok, "give [low, high] with 0 < low <= high, or [1.0, 1.0]"
    yield "data.scale_range", high <= MAX_SCALE, f"use factors of at most {MAX_SCALE:g}"
    weights_ok = cfg.model.encoder_weights != ""
    yield "model.encoder_weights", weights_ok, "use null, imagenet or a file path"
    for name, instead in RESERVED_KWARGS.items():
        yield f"model.kwargs.{name}", name not in cfg.model.kwargs, f"remove it: {instead}"
    yield from model_checks(cfg)
    yield from _loss_checks(cfg)
    yield from _fused_upsampling_checks(cfg)
    yield "optimizer.lr", opt.lr > 0, "the learning rate must be > 0"
    yield "optimizer.momentum", _in_unit(opt.momentum, upper_open=True), "use a value in [0, 1)"
    betas_ok = len(opt.betas) == 2 and all(_in_unit(b, upper_open=True) for b in opt.betas)
    yield "optimizer.betas", betas_ok, "give [beta1, beta2], each in [0, 1)"
    clip_ok = opt.grad_clip is None or opt.grad_clip > 0
    yield "optimizer.grad_clip", clip_ok, "use a max norm > 0, or null for no clipping"
    ema_ok = opt.ema_decay is None or 0 < opt.ema_decay < 1
    yield "optimizer.ema_decay", ema_ok, "use a decay in (0, 1), e.g. 0.99, or null for no EMA"
    iters_ok = sched.max_iters <= MAX_ITERS
    yield "schedule.max_iters", iters_ok, f"use at most {MAX_ITERS:,} (4 months at 100 iters/s)"
    warmup_ok = 0 <= sched.warmup_iters <= sched.max_iters
    yield "schedule.warmup_iters", warmup_ok, f"use 0 up to schedule.max_iters = {sched.max_iters}"
    after_warmup = sched.max_iters - sched.warmup_iters
    cooldown_ok = 0 <= sched.cooldown_iters <= after_warmup
    room = f"use 0 up to schedule.max_iters - schedule.warmup_iters = {after_warmup}"
    yield "schedule.cooldown_iters", cooldown_ok, room
    yield "schedule.min_lr", 0 <= sched.min_lr <= opt.lr, f"use 0 up to optimizer.lr = {opt.lr}"
    device_ok = _DEVICE_RE.fullmatch(cfg.runtime.device) is not None
    yield "runtime.device", device_ok, "use auto, cpu, cuda or cuda:N"
    yield "runtime.seed", 0 <= cfg.runtime.seed < 2**32, "use a value in [0, 2**32)"
    yield from _eval_checks(cfg)


def _loss_checks(cfg: Config) -> Iterable[tuple[str, bool, str]]:
    """(key, ok, what to do) for the loss's settings, by the loss's own rules (no torch).

    A target outside [0, 1] is left to the unit-interval check, which says so already.
    """
    loss = cfg.loss
    problems = settings_problems(
        loss.lb_smooth,
        loss.lb_pos,
        loss.lb_neg,
        loss.class_weight,
        cfg.data.num_classes,
        loss.lovasz_weight,
    )
    for problem in problems:
        key = _LOSS_KEYS[problem.option]
        if key not in _IN_UNIT_INTERVAL or _in_unit(lookup(cfg, key)):
            yield key, False, problem.advice(_LOSS_KEYS.__getitem__)


def _fused_upsampling_checks(cfg: Config) -> Iterable[tuple[str, bool, str]]:
    """(key, ok, what to do) for ``loss.upsample: fused``: a head that upsamples, at its default."""
    if cfg.loss.upsample != "fused":
        return
    arch, kwargs = cfg.model.arch, cfg.model.kwargs or {}
    has_one = has_head_upsampling(arch) is not False  # an unknown arch fails at build_model
    yield "loss.upsample", has_one, fused_without_head_upsampling(arch)
    clash = "upsampling" in kwargs and kwargs["upsampling"] != 1
    yield "model.kwargs.upsampling", not clash, fused_clash(kwargs.get("upsampling"))


def _eval_checks(cfg: Config) -> Iterable[tuple[str, bool, str]]:
    """(key, ok, what to do) for the ``eval`` section: window sizes and scales."""
    crop, stride, scales = cfg.eval.crop_size, cfg.eval.stride, cfg.eval.scales
    pair = "give [height, width] as two positive ints"
    crop_ok = len(crop) in (0, 2) and all(size > 0 for size in crop)
    yield "eval.crop_size", crop_ok, f"{pair}, or [] to use data.crop_size"
    stride_ok = len(stride) in (0, 2) and all(step > 0 for step in stride)
    yield "eval.stride", stride_ok, f"{pair}, or [] for two thirds of the window"
    window = crop or cfg.data.crop_size
    pairs = len(stride) == 2 and len(window) == 2
    fits = not pairs or (stride[0] <= window[0] and stride[1] <= window[1])
    advice = f"a step larger than the window ({window}) skips pixels; use at most the window"
    yield "eval.stride", fits, advice
    scales_ok = len(scales) > 0 and all(0 < scale < float("inf") for scale in scales)
    yield "eval.scales", scales_ok, "give one or more finite factors > 0, e.g. [0.75, 1.0, 1.25]"
    big_ok = all(scale <= MAX_SCALE for scale in scales)
    yield "eval.scales", big_ok, f"use factors of at most {MAX_SCALE:g}"
    crop_fits = max(crop, default=0) <= MAX_CROP_SIDE
    yield "eval.crop_size", crop_fits, f"use at most {MAX_CROP_SIDE} pixels a side"


def _finite(value: Any) -> bool:
    """Whether every float in `value` (a number, or one inside lists and mappings) is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_finite(item) for item in value)
    if isinstance(value, dict):
        return all(_finite(item) for item in value.values())
    return True


def _nonfinite_keys(cfg: Config) -> list[str]:
    """The key paths whose value holds NaN or ±inf (top-level keys such as ``name`` hold none)."""
    sections = [f.name for f in dataclasses.fields(cfg)]
    sections = [name for name in sections if dataclasses.is_dataclass(getattr(cfg, name))]
    return [
        f"{section}.{key.name}"
        for section in sections
        for key in dataclasses.fields(getattr(cfg, section))
        if not _finite(getattr(getattr(cfg, section), key.name))
    ]


def _problems(cfg: Config) -> list[tuple[str, str]]:
    """(key path, what to do) for every value that fails a check.

    A value holding NaN or ±inf gets that said, and no other advice; the relations between
    keys are then left for later (a comparison with NaN or inf would only confuse).
    """
    nonfinite = _nonfinite_keys(cfg)
    problems = [
        (key, f"use one of {', '.join(choices)}")
        for key, choices in _CHOICES.items()
        if lookup(cfg, key) not in choices
    ]
    problems += [
        (key, f"use {low} or more")
        for key, low in _MINIMUM.items()
        if not lookup(cfg, key) >= low  # also catches NaN
    ]
    problems += [
        (key, "use a value in [0, 1]")
        for key in _IN_UNIT_INTERVAL
        if not _in_unit(lookup(cfg, key))
    ]
    problems += [(k, "give a non-empty string") for k in _NON_EMPTY if not lookup(cfg, k)]
    if not nonfinite:  # the relations between keys, only between finite values
        problems += [(key, advice) for key, ok, advice in _special_checks(cfg) if not ok]
    finite_advice = "give finite numbers: NaN and inf are not allowed"
    return [(key, finite_advice) for key in nonfinite] + [
        (key, advice) for key, advice in problems if key not in nonfinite
    ]


def check(cfg: Config, where: Callable[[str], str]) -> None:
    """Raise one ConfigError listing every value that fails a check; `where` names its source."""
    failed = []
    for key, advice in _problems(cfg):
        setting = f"{key} = {show(lookup(cfg, key))}"
        source = where(key)
        failed.append(
            f"{setting} (the default): {advice}"
            if source == "default"
            else f"{source}: {setting}: {advice}"
        )
    if failed:
        raise ConfigError("\n".join(failed))
