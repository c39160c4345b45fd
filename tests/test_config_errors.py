"""Config mistakes found by fault tests (issue 23): each is one ConfigError line, found at load."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import REPO_ROOT

from segls import config
from segls.config import ConfigError

CONFIG = str(REPO_ROOT / "configs/unet_resnet18_scratch_64x64_600.yaml")


def load_error(path: str | Path = CONFIG, overrides=()) -> str:
    """The message of the ConfigError that loading raises (one line)."""
    with pytest.raises(ConfigError) as info:
        config.load(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.arch=Unett", "model.arch = 'Unett': did you mean 'Unet'"),
        ("model.encoder=resnet1800", "model.encoder = 'resnet1800': did you mean 'resnet18'"),
        ("model.kwargs.decoder_chanels=[8]", "did you mean 'decoder_channels'"),
        ("model.kwargs.foo=1", "smp.Unet has no argument 'foo'; model.kwargs may set"),
        ("model.kwargs.encoder_depth=9", "encoder_depth = 9: use an int from 1 to 5"),
        ("model.kwargs.encoder_depth=true", "encoder_depth = true: use an int from 1 to 5"),
    ],
)
def test_model_names_and_kwargs_are_checked_at_load(override, expected):
    assert expected in load_error(overrides=[override])


@pytest.mark.parametrize(
    "override",
    ["model.encoder=tu-convnext_tiny", "model.encoder=efficientnet-lite0", "model.arch=unet++"],
)
def test_timm_encoders_and_aliases_pass_the_load_check(override):
    config.load(CONFIG, [override])
