"""Tests for segls.data.readers (reading files) and segls.data.transforms (pipelines)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from segls.config import DataConfig
from segls.data.readers import DataError, read_image, read_mask, to_channels_last
from segls.data.transforms import NormalisedImage, build_transform, jitter_brightness_contrast

IGNORE = 255


def make_cfg(**overrides) -> DataConfig:
    """Small DataConfig for transform tests."""
    base = dict(
        in_channels=3,
        mean=[0.5, 0.4, 0.3],
        std=[0.2, 0.25, 0.5],
        crop_size=[16, 16],
        scale_range=[1.0, 1.0],
        hflip=0.0,
    )
    base.update(overrides)
    return DataConfig(**base)


def by_hand(image: np.ndarray, scale: float, mean, std) -> np.ndarray:
    """Reference normalisation in float64: C×H×W of (image / scale - mean) / std."""
    scaled = image.astype(np.float64) / scale
    return ((scaled - np.asarray(mean)) / np.asarray(std)).transpose(2, 0, 1)


# ---------------------------------------------------------------- io


def test_read_image_rgb_png_keeps_rgb_order(tmp_path):
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    Image.fromarray(rgb, "RGB").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)


def test_read_image_grayscale_and_16bit_png(tmp_path):
    gray16 = (np.arange(20).reshape(4, 5) * 3000).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    out = read_image(tmp_path / "g16.png")
    assert out.shape == (4, 5, 1) and out.dtype == np.uint16
    np.testing.assert_array_equal(out[..., 0], gray16)


def test_read_image_two_channel_16bit_tiff_channels_last_and_first(tmp_path):
    image = np.random.default_rng(0).integers(0, 65536, (6, 9, 2), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "last.tif", image, photometric="minisblack")
    tifffile.imwrite(tmp_path / "first.tiff", np.moveaxis(image, -1, 0), photometric="minisblack")
    for name in ("last.tif", "first.tiff"):
        out = read_image(tmp_path / name)
        assert out.dtype == np.uint16 and out.shape == (6, 9, 2), name
        np.testing.assert_array_equal(out, image)


def test_read_image_float_tiff(tmp_path):
    image = np.random.default_rng(1).random((4, 4)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", image)
    out = read_image(tmp_path / "f.tif")
    assert out.shape == (4, 4, 1) and out.dtype == np.float32


def test_to_channels_last_rejects_stacks():
    with pytest.raises(DataError, match="stack.tif"):
        to_channels_last(np.zeros((3, 4, 5, 6)), "stack.tif")


@pytest.mark.parametrize("name", ["broken.png", "broken.jpg", "broken.tif", "empty.png"])
def test_read_image_corrupt_file_names_it(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"" if name.startswith("empty") else b"not an image at all")
    with pytest.raises(DataError, match=name):
        read_image(path)


def test_read_image_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        read_image(tmp_path / "nothere.png")


def test_read_mask_palette_png_keeps_indices(tmp_path):
    indices = np.array([[0, 1, 2, 15], [20, 255, 3, 0]], np.uint8)
    mask = Image.fromarray(indices, mode="P")
    mask.putpalette([value for i in range(256) for value in (i, 255 - i, (7 * i) % 256)])
    mask.save(tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode == "P"
    out = read_mask(tmp_path / "m.png")
    assert out.shape == (2, 4)
    np.testing.assert_array_equal(out, indices)


def test_read_mask_16bit_png_and_tiff(tmp_path):
    values = np.array([[0, 300], [65535, 2]], np.uint16)
    Image.fromarray(values).save(tmp_path / "m16.png")
    tifffile.imwrite(tmp_path / "m16.tif", values)
    for name in ("m16.png", "m16.tif"):
        out = read_mask(tmp_path / name)
        assert out.dtype == np.uint16
        np.testing.assert_array_equal(out, values)


def test_read_mask_rejects_rgb_and_corrupt(tmp_path):
    Image.fromarray(np.zeros((3, 3, 3), np.uint8), "RGB").save(tmp_path / "colour.png")
    with pytest.raises(DataError, match="colour.png"):
        read_mask(tmp_path / "colour.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="bad.png"):
        read_mask(tmp_path / "bad.png")


# ---------------------------------------------------------------- transforms


def test_validation_is_normalise_only_and_deterministic():
    cfg = make_cfg(in_channels=2, mean=[0.1, 0.9], std=[0.5, 2.0], photometric=1.0, hflip=1.0)
    image = np.random.default_rng(2).integers(0, 65536, (11, 13, 2), dtype=np.uint16)
    label = np.random.default_rng(3).integers(0, 3, (11, 13), dtype=np.uint8)
    transform = build_transform(cfg, train=False)
    first_image, first_label = transform(image, label)
    second_image, second_label = transform(image, label)
    assert first_image.dtype == torch.float32 and first_label.dtype == torch.int64
    assert first_image.shape == (2, 11, 13) and first_label.shape == (11, 13)
    expected = by_hand(image, 65535.0, cfg.mean, cfg.std)
    np.testing.assert_allclose(first_image.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(first_label.numpy(), label)
    assert torch.equal(first_image, second_image) and torch.equal(first_label, second_label)


def test_train_pads_image_with_zero_and_label_with_ignore():
    cfg = make_cfg(crop_size=[12, 10])
    image = np.full((7, 6, 3), 200, np.uint8)
    label = np.ones((7, 6), np.uint8)
    out_image, out_label = build_transform(cfg, train=True, seed=0)(image, label)
    assert out_image.shape == (3, 12, 10) and out_label.shape == (12, 10)
    label_np = out_label.numpy()
    assert (label_np == 1).sum() == 7 * 6
    assert set(np.unique(label_np)) == {1, IGNORE}
    padded = label_np == IGNORE
    zero_normalised = (0.0 - np.asarray(cfg.mean)) / np.asarray(cfg.std)
    for channel in range(3):
        np.testing.assert_allclose(out_image[channel].numpy()[padded], zero_normalised[channel])
        np.testing.assert_allclose(
            out_image[channel].numpy()[~padded], (200 / 255 - cfg.mean[channel]) / cfg.std[channel]
        )


def test_hflip_moves_image_and_label_together():
    cfg = make_cfg(crop_size=[5, 6], hflip=1.0)
    image = np.random.default_rng(4).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    label = np.random.default_rng(5).integers(0, 4, (5, 6), dtype=np.uint8)
    out_image, out_label = build_transform(cfg, train=True, seed=1)(image, label)
    expected = by_hand(image[:, ::-1], 255.0, cfg.mean, cfg.std)
    np.testing.assert_allclose(out_image.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out_label.numpy(), label[:, ::-1])


def test_rotate90_with_non_square_crop_keeps_crop_shape():
    cfg = make_cfg(crop_size=[8, 20], rotate90=1.0, scale_range=[0.8, 1.2])
    transform = build_transform(cfg, train=True, seed=3)
    image = np.zeros((30, 25, 3), np.uint8)
    label = np.zeros((30, 25), np.uint8)
    for _ in range(8):
        out_image, out_label = transform(image, label)
        assert out_image.shape == (3, 8, 20) and out_label.shape == (8, 20)


@settings(max_examples=30, deadline=None)
@given(
    height=st.integers(4, 40),
    width=st.integers(4, 40),
    channels=st.integers(1, 5),
    dtype=st.sampled_from([np.uint8, np.uint16, np.float32]),
    label_values=st.lists(st.integers(0, 9), min_size=1, max_size=4, unique=True),
    seed=st.integers(0, 2**16),
)
def test_train_labels_stay_nearest_after_random_scale(
    height, width, channels, dtype, label_values, seed
):
    rng = np.random.default_rng(seed)
    cfg = make_cfg(
        in_channels=channels,
        mean=[0.5] * channels,
        std=[0.25] * channels,
        crop_size=[24, 20],
        scale_range=[0.3, 3.0],
        hflip=0.5,
        vflip=0.5,
        rotate90=0.5,
        photometric=0.5,
    )
    if dtype == np.float32:
        image = rng.random((height, width, channels)).astype(np.float32)
    else:
        image = rng.integers(0, np.iinfo(dtype).max, (height, width, channels), dtype=dtype)
    label = rng.choice(np.asarray(label_values, np.uint8), size=(height, width))
    out_image, out_label = build_transform(cfg, train=True, seed=seed)(image, label)
    assert out_image.shape == (channels, 24, 20) and out_image.dtype == torch.float32
    assert out_label.shape == (24, 20) and out_label.dtype == torch.int64
    assert torch.isfinite(out_image).all()
    assert set(out_label.unique().tolist()) <= set(label_values) | {IGNORE}


def test_same_seed_same_augmentations_and_reseed_restarts():
    cfg = make_cfg(crop_size=[10, 10], scale_range=[0.5, 2.0], hflip=0.5, photometric=0.5)
    image = np.random.default_rng(6).integers(0, 256, (20, 18, 3), dtype=np.uint8)
    label = np.random.default_rng(7).integers(0, 3, (20, 18), dtype=np.uint8)
    first = build_transform(cfg, train=True, seed=11)
    second = build_transform(cfg, train=True, seed=11)
    run_a = [first(image, label) for _ in range(5)]
    run_b = [second(image, label) for _ in range(5)]
    for (image_a, label_a), (image_b, label_b) in zip(run_a, run_b, strict=True):
        assert torch.equal(image_a, image_b) and torch.equal(label_a, label_b)
    assert any(not torch.equal(run_a[0][0], other[0]) for other in run_a[1:])
    first.set_random_seed(11)
    assert torch.equal(first(image, label)[0], run_a[0][0])


def test_photometric_jitter_on_16bit_multichannel_changes_only_the_image():
    cfg = make_cfg(in_channels=4, mean=[0.0] * 4, std=[1.0] * 4, crop_size=[8, 8])
    image = np.random.default_rng(8).integers(0, 65536, (8, 8, 4), dtype=np.uint16)
    label = np.random.default_rng(9).integers(0, 2, (8, 8), dtype=np.uint8)
    plain_image, plain_label = build_transform(cfg, train=True, seed=0)(image, label)
    cfg.photometric = 1.0
    jitter_image, jitter_label = build_transform(cfg, train=True, seed=0)(image, label)
    assert torch.equal(plain_label, jitter_label)
    assert not torch.allclose(plain_image, jitter_image)
    assert jitter_image.min() >= 0.0 and jitter_image.max() <= 1.0


def test_mean_length_must_match_in_channels():
    with pytest.raises(ValueError, match="in_channels"):
        build_transform(make_cfg(in_channels=2), train=False)


def test_validation_accepts_an_image_without_label():
    cfg = make_cfg(in_channels=1, mean=[0.0], std=[1.0])
    image = np.arange(7 * 3, dtype=np.uint8).reshape(7, 3, 1)
    out_image, out_label = build_transform(cfg, train=False)(image, None)
    assert out_label is None and out_image.shape == (1, 7, 3)
    np.testing.assert_allclose(out_image[0].numpy(), image[..., 0] / 255.0, rtol=1e-6)


def test_photometric_jitter_is_relative_to_each_channels_own_spread():
    rng = np.random.default_rng(0)
    # two channels like the bundled 16-bit sample: narrow spreads at very different levels
    image = np.stack(
        [rng.normal(0.01, 0.003, (64, 64)), rng.normal(0.125, 0.004, (64, 64))], axis=-1
    ).astype(np.float32)
    for seed in range(20):
        out = jitter_brightness_contrast(image.copy(), np.random.default_rng(seed))
        for c in range(2):
            mean, std = image[..., c].mean(), image[..., c].std()
            # offset at most 0.5 std, spread changed by at most 30 % (hand-derived bounds)
            assert abs(out[..., c].mean() - mean) <= 0.5 * std + 1e-6
            assert 0.7 * std - 1e-6 <= out[..., c].std() <= 1.3 * std + 1e-6


# ---------------------------------------------------------------- percentile scaling


def test_percentile_scaling_by_hand_on_a_ramp():
    # Channel 0 holds 0..100 (numpy's linear percentiles 10 and 90 are 10 and 90), channel 1
    # the ramp times 7 plus 1000 (bounds 1070 and 1630): both map to (value - 10) / 80.
    ramp = np.arange(101, dtype=np.uint16).reshape(1, 101)
    image = np.stack([ramp, ramp * 7 + 1000], axis=-1)
    cfg = make_cfg(in_channels=2, mean=[0.0, 0.0], std=[1.0, 1.0], scaling="percentile")
    cfg.percentiles = [10.0, 90.0]
    tensor, _ = build_transform(cfg, train=False)(image)
    expected = (np.arange(101) - 10) / 80.0
    np.testing.assert_allclose(tensor[0, 0].numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(tensor[1, 0].numpy(), expected, atol=1e-6)
    assert tensor.min() < 0 and tensor.max() > 1, "values beyond the percentiles are kept"


def test_percentile_scaling_removes_a_global_gain_and_offset():
    # The same scene recorded brighter (gain 1.5, offset 200) scales to the same values.
    rng = np.random.default_rng(0)
    scene = rng.integers(100, 3000, (20, 30, 2)).astype(np.float64)
    dim = scene.astype(np.uint16)
    bright = (scene * 1.5 + 200).astype(np.uint16)
    cfg = make_cfg(in_channels=2, mean=[0.1, 0.4], std=[0.2, 0.1], scaling="percentile")
    transform = build_transform(cfg, train=False)
    a, b = transform(dim)[0], transform(bright)[0]
    assert torch.allclose(a, b, atol=2e-3)
    dtype_scaled = build_transform(make_cfg(in_channels=2, mean=[0.1, 0.4], std=[0.2, 0.1]), False)
    assert not torch.allclose(dtype_scaled(dim)[0], dtype_scaled(bright)[0], atol=2e-3)


def test_training_crops_are_scaled_by_the_whole_images_percentiles():
    # Left half dark, right half bright: a crop inside one half has other percentiles than
    # the whole image, and must still be scaled by the whole image's.
    image = np.zeros((16, 32, 1), np.uint16)
    image[:, :16] = np.arange(16, dtype=np.uint16)[None, :, None] + 100
    image[:, 16:] = np.arange(16, dtype=np.uint16)[None, :, None] * 50 + 1000
    label = np.zeros((16, 32), np.uint8)
    common = dict(in_channels=1, mean=[0.0], std=[1.0], scaling="percentile")
    low, high = np.percentile(image, [1.0, 99.8])
    whole = (image[..., 0].astype(np.float64) - low) / (high - low)
    transform = build_transform(make_cfg(crop_size=[8, 8], **common), train=True, seed=0)
    for _ in range(10):
        crop = transform(image, label)[0][0].numpy()
        windows = [
            np.abs(whole[y : y + 8, x : x + 8] - crop).max() for y in range(9) for x in range(25)
        ]
        assert min(windows) < 1e-5, "the crop is not a window of the whole-image scaling"


def test_percentile_scaling_of_a_flat_channel_gives_zeros_not_nan():
    image = np.full((6, 7, 2), 300, np.uint16)
    image[..., 1] = np.arange(42, dtype=np.uint16).reshape(6, 7)
    cfg = make_cfg(in_channels=2, mean=[0.0, 0.0], std=[1.0, 1.0], scaling="percentile")
    tensor = build_transform(cfg, train=False)(image)[0]
    assert torch.isfinite(tensor).all()
    assert torch.equal(tensor[0], torch.zeros(6, 7))


@pytest.mark.parametrize(
    ("key", "value"),
    [("scaling", "minmax"), ("percentiles", [99.8, 1.0]), ("percentiles", [1.0, 101.0])],
)
def test_bad_scaling_settings_are_config_errors(key, value):
    from segls.config import Config, validate

    data = make_cfg()
    setattr(data, key, value)
    with pytest.raises(ValueError, match=f"data.{key}"):
        validate(Config(data=data))


def test_percentile_normalise_refuses_to_scale_a_crop_by_its_own_percentiles():
    cfg = make_cfg(in_channels=1, mean=[0.0], std=[1.0], scaling="percentile")
    transform = build_transform(cfg, train=False)
    with pytest.raises(ValueError, match="whole image's bounds"):
        transform.normalise(np.zeros((4, 4, 1), np.uint16))


@pytest.mark.parametrize(
    ("dtype", "channels", "scaling"),
    [(np.uint8, 3, "dtype"), (np.uint16, 1, "dtype"), (np.uint16, 2, "percentile"),
     (np.float32, 3, "percentile")],
)  # fmt: skip
def test_a_normalised_image_region_equals_that_region_of_the_whole_normalised_image(
    dtype, channels, scaling
):
    rng = np.random.default_rng(0)
    top = 255 if dtype == np.uint8 else 65535
    raw = rng.integers(0, top, (37, 29, channels)).astype(dtype)
    if channels == 1:
        raw = raw[:, :, 0]  # a 2-D greyscale image, as read_image may give
    cfg = make_cfg(
        in_channels=channels, mean=[0.3] * channels, std=[0.2] * channels, scaling=scaling
    )
    transform = build_transform(cfg, train=False)
    whole = transform(raw)[0]
    lazy = NormalisedImage(raw, transform)
    assert lazy.shape == whole.shape
    for rows, cols in [(slice(5, 20), slice(3, 28)), (slice(30, 60), slice(None)),
                       (slice(None, None, 4), slice(None, None, 3))]:  # fmt: skip
        assert torch.equal(lazy[:, rows, cols], whole[:, rows, cols])  # bit for bit
    assert torch.equal(lazy[:, 10:12], whole[:, 10:12]) and lazy.is_finite(band_rows=8)
    raw = raw.astype(np.float32)
    raw[33, 4] = np.nan
    assert not NormalisedImage(raw, transform).is_finite(band_rows=8)
    with pytest.raises(ValueError, match="validation transform"):
        NormalisedImage(raw, build_transform(cfg, train=True))
