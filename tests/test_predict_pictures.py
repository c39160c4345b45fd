"""Tests of the image panels shown in TensorBoard."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from segls.predict.pictures import captioned_grid, colorize, displayable, error_map, panel

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
    assert shown.dtype == torch.uint8 and shown.shape[2] == 3
    # four tiles enlarged to at least 160 px a side, in a 2×2 grid or in one row or column
    assert min(shown.shape[:2]) >= 160 and shown.shape[0] * shown.shape[1] >= 4 * 160**2


def colour_count(picture: torch.Tensor, colour: list[int]) -> int:
    return int((picture == torch.tensor(colour, dtype=torch.uint8)).all(dim=-1).sum())


def test_the_grid_enlarges_small_tiles_and_keeps_every_pixel():
    red = torch.tensor([201, 0, 0], dtype=torch.uint8).expand(10, 10, 3)
    blue = torch.tensor([0, 0, 203], dtype=torch.uint8).expand(10, 10, 3)
    grid = captioned_grid([("red", red), ("blue", blue)], [("cls", [0, 202, 0])])
    assert colour_count(grid, [201, 0, 0]) == 160 * 160  # 10 px enlarged 16 times
    assert colour_count(grid, [0, 0, 203]) == 160 * 160
    assert colour_count(grid, [0, 202, 0]) > 0  # the legend's swatch


@pytest.mark.parametrize(("height", "width", "columns"), [(20, 120, 1), (40, 40, 2), (120, 20, 4)])
def test_wide_images_are_stacked_and_tall_ones_put_side_by_side(height, width, columns):
    label = torch.zeros(height, width, dtype=torch.long)
    shown = panel(torch.zeros(1, height, width), label, label, PALETTE, [0.0], [1.0])
    zoom = -(-160 // min(height, width))
    assert (width * zoom) * columns < shown.shape[1] < (width * zoom + 20) * columns


def test_error_map_marks_wrong_and_ignored_pixels():
    label = torch.tensor([[0, 1, 255]])
    pred = torch.tensor([[0, 2, 1]])
    colours = error_map(label, pred, ignore_index=255)[0].tolist()
    assert colours[1] == [235, 40, 40]  # wrong: red
    assert colours[2] == [255, 255, 255]  # ignored: white, whatever was predicted
    assert colours[0] not in (colours[1], colours[2])  # right: neither


def test_the_legend_shows_only_the_classes_present():
    label = torch.tensor([[0, 0, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 1]])
    image = torch.zeros(1, 1, 4)
    plain = panel(image, label, pred, PALETTE, [0.0], [1.0])
    shown = panel(image, label, pred, PALETTE, [0.0], [1.0], class_names=["sky", "road", "car"])
    assert colour_count(shown, PALETTE[2]) == 0  # "car" is in neither: no swatch
    assert colour_count(shown, PALETTE[1]) > colour_count(plain, PALETTE[1])  # "road"'s swatch
