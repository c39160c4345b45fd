"""The model names that configs are checked against keep in step with smp and timm."""

from __future__ import annotations

import inspect
import re

import pytest
import segmentation_models_pytorch as smp
import timm

from segls.models import weights
from segls.models.names import (
    ARCH_CLASS_NAMES,
    ARCH_KWARGS,
    DECODER_BLOCK_ARCHS,
    DEFAULT_DECODER_CHANNELS,
    ENCODER_ALIASES,
    RESERVED_KWARGS,
    SMP_ENCODER_NAMES,
    TIMM_ENCODER_RE,
)


def test_the_encoder_list_is_smps():
    assert list(SMP_ENCODER_NAMES) == smp.encoders.get_encoder_names()
    assert ENCODER_ALIASES == {"efficientnet-lite0": weights.LITE0_ENCODER}


def test_every_timm_model_has_the_form_the_config_accepts():
    pattern = re.compile(TIMM_ENCODER_RE)
    assert all(pattern.fullmatch(f"tu-{name}") for name in timm.list_models())


def test_every_architecture_and_its_kwargs_are_smps():
    assert set(ARCH_KWARGS) == set(ARCH_CLASS_NAMES.values())
    for class_name, accepted in ARCH_KWARGS.items():
        parameters = inspect.signature(getattr(smp, class_name)).parameters.values()
        names = [
            p.name
            for p in parameters
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in RESERVED_KWARGS
        ]
        assert list(accepted) == names, class_name


def test_the_archs_with_one_decoder_block_per_stage_are_those_smp_checks():
    # The config refuses encoder_depth != len(decoder_channels) for these; smp refuses it too,
    # and only for these among the archs that take decoder_channels as a list.
    for class_name in ARCH_KWARGS:
        default = inspect.signature(getattr(smp, class_name)).parameters.get("decoder_channels")
        listed = default is not None and isinstance(default.default, tuple | list)
        assert listed == (class_name in DECODER_BLOCK_ARCHS), class_name
        if listed:
            assert tuple(default.default) == DEFAULT_DECODER_CHANNELS
            with pytest.raises(ValueError, match="Model depth is 3"):
                getattr(smp, class_name)("resnet18", encoder_weights=None, encoder_depth=3)
            getattr(smp, class_name)(
                "resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=[8, 8, 8]
            )
