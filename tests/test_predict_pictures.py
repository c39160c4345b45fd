"""Tests of the image panels shown in TensorBoard."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from segls.predict.pictures import colorize, displayable, panel

PALETTE = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]


def test_colorize_maps_classes_and_whitens_ignored_pixels():
    label = torch.tensor([[0, 1], [2, 255], [7, -1]])
    colours = colorize(label, PALETTE)
    assert colours.dtype == torch.uint8 and colours.shape == (3, 2, 3)
    assert colours[0, 0].tolist() == [0, 0, 0]
    assert colours[0, 1].tolist() == [255, 0, 0]
    assert colours[1, 0].tolist() == [0, 0, 255]
    assert colours[1, 1].tolist() == [255, 255, 255]
    assert colours[2].tolist() == [[255, 255, 255], [255, 255, 255]]  # not a class


def test_displayable_undoes_the_normalisation_without_stretch():
    raw = torch.tensor([[[0.0, 0.5], [1.0, 0.25]]])  # 1 channel in [0, 1]
    normalised = (raw - 0.3) / 0.2
    shown = displayable(normalised, [0.3], [0.2], stretch=False)
    assert shown.shape == (2, 2, 3)
    expected = (raw[0] * 255).round().to(torch.uint8)
    for channel in range(3):
        assert torch.equal(shown[..., channel], expected)


def test_two_channels_become_a_magenta_green_composite():
    image = torch.zeros(2, 1, 2)
    image[0, 0, 0] = 1.0  # channel 0 only
    image[1, 0, 1] = 1.0  # channel 1 only
    shown = displayable(image, [0.0, 0.0], [1.0, 1.0], stretch=False)
    assert shown[0, 0].tolist() == [255, 0, 255]
    assert shown[0, 1].tolist() == [0, 255, 0]


@settings(max_examples=25, deadline=None)
@given(
    channels=st.integers(1, 5),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    scale=st.floats(1e-4, 1e4),
)
def test_panel_shape_and_dtype_for_any_image(channels, height, width, scale):
    image = scale * torch.rand(channels, height, width)
    label = torch.randint(0, 3, (height, width))
    shown = panel(image, label, label, PALETTE, [0.5] * channels, [0.25] * channels)
    assert shown.dtype == torch.uint8
    assert shown.shape == (height, 3 * width + 8, 3)


def test_mismatched_inputs_are_reported():
    with pytest.raises(ValueError, match="mean/std"):
        displayable(torch.zeros(2, 4, 4), [0.5], [0.5])
    with pytest.raises(ValueError, match="share H×W"):
        panel(torch.zeros(1, 4, 4), torch.zeros(4, 4), torch.zeros(3, 4), PALETTE, [0], [1])
