"""The model names that configs are checked against keep in step with smp and timm."""

from __future__ import annotations

import inspect
import re

import segmentation_models_pytorch as smp
import timm

from segls.models import weights
from segls.models.names import (
    ARCH_CLASS_NAMES,
    ARCH_KWARGS,
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
