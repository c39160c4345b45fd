"""Segmentation models from segmentation-models-pytorch, built offline from a model config."""

from __future__ import annotations

import difflib
import inspect
from typing import Any

import segmentation_models_pytorch as smp
import timm
from torch import nn

from segls import ConfigError
from segls.models import weights
from segls.models.names import (
    ARCH_CLASS_NAMES,
    ENCODER_ALIASES,
    HEAD_UPSAMPLING_CLASS_NAMES,
    LOSS_UPSAMPLE,
    RESERVED_KWARGS,
    fused_clash,
    fused_without_head_upsampling,
)

ARCHS: dict[str, type[nn.Module]] = {
    name: getattr(smp, class_name) for name, class_name in ARCH_CLASS_NAMES.items()
}

# The smp classes whose head ends in a bilinear upsampling (see HEAD_UPSAMPLING_CLASS_NAMES).
# Their SegmentationHead upsamples with nn.Upsample(mode="bilinear", align_corners=True).
HEAD_UPSAMPLING_ARCHS = tuple(getattr(smp, name) for name in HEAD_UPSAMPLING_CLASS_NAMES)
HEAD_ALIGN_CORNERS = True


def build_model(
    model_cfg: Any, in_channels: int, num_classes: int, loss_upsample: str = "outside"
) -> nn.Module:
    """An smp model whose forward maps N×in_channels×H×W images to N×num_classes×H×W logits.

    model_cfg is a ModelConfig or any object with arch, encoder, encoder_weights and kwargs.
    Nothing is downloaded: smp always gets encoder_weights=None and the weights, if any,
    are loaded from local files afterwards (see `segls.models.weights`). With
    `loss_upsample` "fused" the head is built without its final upsampling (``upsampling=1``)
    and the logits are at 1/4 or 1/8 of the images' size: the loss upsamples them, and
    `segls.models.forward_padded` for predictions. The weights are the same either way.
    """
    arch_class = arch_class_for(model_cfg.arch)
    encoder_name = resolve_encoder(model_cfg.encoder)
    kwargs = check_kwargs(arch_class, model_cfg.kwargs)
    kwargs.update(head_kwargs(arch_class, kwargs, loss_upsample))
    for name, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    weights.check_weights(model_cfg.encoder_weights, encoder_name)
    try:
        model = arch_class(
            encoder_name=encoder_name,
            encoder_weights=None,
            in_channels=in_channels,
            classes=num_classes,
            **kwargs,
        )
    except (ValueError, TypeError, AssertionError) as error:  # smp's checks of its arguments
        raise ConfigError(
            f"smp.{arch_class.__name__} with model.encoder {encoder_name!r} and model.kwargs "
            f"{model_cfg.kwargs or {}} refused them: {' '.join(str(error).split())}; change model.kwargs"
        ) from None
    check_no_empty_layers(model, arch_class.__name__, kwargs)
    if model_cfg.encoder_weights is not None:
        weights.load_encoder_weights(model.encoder, model_cfg.encoder_weights, encoder_name)
    return model


def check_no_empty_layers(model: nn.Module, arch: str, kwargs: dict) -> None:
    """Raise naming the layers that kwargs left without channels (they fail only at forward).

    E.g. smp's scSE attention divides a block's channels by 16, so
    ``decoder_attention_type='scse'`` with a decoder width of 8 builds a 0-channel conv.
    """
    empty = [
        f"{name} ({layer.in_channels} -> {layer.out_channels} channels)"
        for name, layer in model.named_modules()
        if isinstance(layer, nn.modules.conv._ConvNd)
        and 0 in (layer.in_channels, layer.out_channels)
    ]
    if empty:
        shown = "; ".join(empty[:3]) + (f"; and {len(empty) - 3} more" if len(empty) > 3 else "")
        raise ValueError(
            f"smp.{arch} with model.kwargs {kwargs} has layers without channels: {shown}. "
            "Widen the layers that model.kwargs sets (e.g. decoder_channels)"
        )


def _suggest(name: str, candidates: list[str]) -> str:
    """' Did you mean ...?' for the closest candidates, or ''."""
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def arch_class_for(arch: str) -> type[nn.Module]:
    """The smp class for a case-insensitive architecture name."""
    key = str(arch).strip().lower()
    if key not in ARCHS:
        raise ConfigError(
            f"unknown model.arch {arch!r}.{_suggest(key, list(ARCHS))} "
            f"Valid names (case-insensitive): {', '.join(ARCHS)}"
        )
    return ARCHS[key]


def resolve_encoder(encoder: str) -> str:
    """The smp encoder name for encoder, after aliases; raise with close matches if unknown."""
    name = ENCODER_ALIASES.get(str(encoder).strip().lower(), str(encoder).strip())
    if name.startswith("tu-"):
        if timm.is_model(name[3:]):
            return name
        suggestion = _suggest(name, ["tu-" + model for model in timm.list_models()])
        raise ConfigError(
            f"unknown model.encoder {encoder!r}: timm has no model '{name[3:]}'.{suggestion}"
        )
    smp_names = smp.encoders.get_encoder_names()
    if name in smp_names:
        return name
    if timm.is_model(name):
        suggestion = f" timm has it: use 'tu-{name}'."
    else:
        suggestion = _suggest(name, smp_names + list(ENCODER_ALIASES))
    raise ConfigError(
        f"unknown model.encoder {encoder!r}.{suggestion} Valid names: "
        "smp.encoders.get_encoder_names(), 'efficientnet-lite0', or any timm model as 'tu-<name>'."
    )


def head_kwargs(arch_class: type[nn.Module], kwargs: dict, loss_upsample: str) -> dict:
    """The constructor arguments that `loss_upsample` adds: ``upsampling=1`` when "fused"."""
    if loss_upsample not in LOSS_UPSAMPLE:
        raise ValueError(
            f"loss.upsample must be one of {', '.join(LOSS_UPSAMPLE)}; got {loss_upsample!r}"
        )
    if loss_upsample == "outside":
        return {}
    if arch_class not in HEAD_UPSAMPLING_ARCHS:
        raise ValueError(fused_without_head_upsampling(arch_class.__name__))
    if "upsampling" in kwargs and kwargs["upsampling"] != 1:
        raise ValueError(fused_clash(kwargs["upsampling"]))
    return {"upsampling": 1}


def check_kwargs(arch_class: type[nn.Module], kwargs: dict | None) -> dict:
    """kwargs for the smp constructor; raise naming any that it does not take."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise TypeError(f"model.kwargs must be a mapping, got {type(kwargs).__name__}")
    reserved = [f"{key} ({RESERVED_KWARGS[key]})" for key in kwargs if key in RESERVED_KWARGS]
    if reserved:
        raise ConfigError(f"model.kwargs may not set {'; '.join(reserved)}")
    parameters = inspect.signature(arch_class).parameters.values()
    accepted = [
        p.name
        for p in parameters
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in RESERVED_KWARGS
    ]
    unknown = [key for key in kwargs if key not in accepted]
    if unknown:
        hints = "".join(_suggest(key, accepted) for key in unknown)
        raise ConfigError(
            f"model.kwargs {unknown} are not arguments of smp.{arch_class.__name__}.{hints} "
            f"Accepted: {', '.join(accepted)}"
        )
    return dict(kwargs)
