"""The model section's names, checked at config load against lists kept in `segls.models.names`.

model.arch, model.encoder and the keys of model.kwargs are checked here, without importing
smp or torch, so that a misspelled name is reported before any data is read; what only the
built model can tell (a timm name, a combination smp refuses) is `build_model`'s.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from segls.config.schema import Config
from segls.models.names import (
    ARCH_CLASS_NAMES,
    ARCH_KWARGS,
    DECODER_BLOCK_ARCHS,
    DEFAULT_DECODER_CHANNELS,
    ENCODER_ALIASES,
    ENCODER_DEPTHS,
    RESERVED_KWARGS,
    SMP_ENCODER_NAMES,
    TIMM_ENCODER_RE,
)

__all__ = ["model_checks"]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """'did you mean 'x'? ' for the closest candidates, or ''."""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""


def _arch_advice(arch: str) -> str:
    """What to write instead of an unknown model.arch."""
    by_key = {key: name for key, name in ARCH_CLASS_NAMES.items() if key.isalnum()}
    close = difflib.get_close_matches(arch.strip().lower(), list(by_key), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(by_key[key]) for key in close)}? " if close else ""
    return f"{hint}use one of {', '.join(by_key.values())} (any case)"


def _encoder_known(encoder: str) -> bool:
    """Whether model.encoder is an smp encoder, an alias of ours or of the form tu-<timm name>."""
    name = ENCODER_ALIASES.get(encoder.strip().lower(), encoder.strip())
    return name in SMP_ENCODER_NAMES or re.fullmatch(TIMM_ENCODER_RE, name) is not None


def _encoder_advice(encoder: str) -> str:
    """What to write instead of an unknown model.encoder."""
    hint = did_you_mean(encoder.strip(), [*SMP_ENCODER_NAMES, *ENCODER_ALIASES])
    return (
        f"{hint}use an smp encoder (smp.encoders.get_encoder_names(), e.g. resnet18), "
        "efficientnet-lite0, or a timm model as tu-<name>"
    )


def model_checks(cfg: Config) -> Iterable[tuple[str, bool, str]]:
    """(key, ok, what to do) for model.arch, model.encoder and the keys of model.kwargs."""
    model = cfg.model
    class_name = ARCH_CLASS_NAMES.get(model.arch.strip().lower())
    if model.arch:
        yield "model.arch", class_name is not None, _arch_advice(model.arch)
    if model.encoder:
        yield "model.encoder", _encoder_known(model.encoder), _encoder_advice(model.encoder)
    if class_name is None:
        return
    accepted = ARCH_KWARGS[class_name]
    for key in model.kwargs:
        if key in RESERVED_KWARGS:
            continue  # said by checks._special_checks, with where to set it instead
        if not isinstance(key, str) or "." in key:
            yield "model.kwargs", False, f"the key {key!r} is not an argument name"
            continue
        advice = (
            f"smp.{class_name} has no argument {key!r}; {did_you_mean(str(key), accepted)}"
            f"model.kwargs may set {', '.join(accepted)}"
        )
        yield f"model.kwargs.{key}", key in accepted, advice
    depth = model.kwargs.get("encoder_depth", 5)
    depth_ok = type(depth) is int and depth in ENCODER_DEPTHS
    depth_advice = "use an int from 1 to 5: smp's encoders have 5 stages (the default is 5)"
    yield "model.kwargs.encoder_depth", depth_ok, depth_advice
    if depth_ok and class_name in DECODER_BLOCK_ARCHS:
        yield from _decoder_blocks_check(class_name, depth, model.kwargs.get("decoder_channels"))


def _decoder_blocks_check(
    class_name: str, depth: int, channels: object
) -> Iterable[tuple[str, bool, str]]:
    """encoder_depth against the length of decoder_channels (one decoder block per stage)."""
    if channels is not None and not isinstance(channels, list | tuple):
        return  # not a list: smp says what it wants
    blocks = len(DEFAULT_DECODER_CHANNELS if channels is None else channels)
    if blocks == depth:
        return
    has = f"{blocks} (the default)" if channels is None else str(blocks)
    example = list(DEFAULT_DECODER_CHANNELS[:depth])
    key = "model.kwargs.encoder_depth" if channels is None else "model.kwargs.decoder_channels"
    yield (
        key,
        False,
        (
            f"smp.{class_name} has one decoder block per encoder stage, so "
            f"model.kwargs.decoder_channels needs model.kwargs.encoder_depth={depth} values but "
            f"has {has}; give it {depth} (e.g. {example}) or change the depth"
        ),
    )
