"""Tests for the bundled scratch-assay sample and its conversion."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from segls import io
from segls.cli import prepare_sample as prepare_sample_cli
from segls.data import channel_stats, sample

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMITTED_ROOT = REPO_ROOT / "data" / "scratch_assay"
LICENSE_TEXT = "Copyright (c) 2025, Example\nRedistribution and use ... BSD-3-Clause\n"
T, H, W = 10, 6, 8


def make_stack(seed: int = 0) -> np.ndarray:
    """Random C×T×H×W uint16 stack: 2 image channels, then nuclei and cytoplasm labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 65536, size=(2, T, H, W), dtype=np.uint16)
    labels = rng.integers(0, 4, size=(2, T, H, W), dtype=np.uint16)
    labels[rng.random(labels.shape) < 0.4] = 0
    return np.concatenate([images, labels])


def write_fake_site(site: Path, stack: np.ndarray, axes: str = "CTYX") -> Path:
    """Lay out an installed-package look-alike: package/samples/<tiff> plus a dist-info licence."""
    source = site / "ndev_sampledata" / "samples" / sample.SOURCE_FILE
    source.parent.mkdir(parents=True)
    tifffile.imwrite(source, stack, ome=True, metadata={"axes": axes})
    license_path = site / "ndev_sampledata-0.0.3.dist-info" / "licenses" / "LICENSE"
    license_path.parent.mkdir(parents=True)
    license_path.write_text(LICENSE_TEXT)
    return source


@pytest.fixture
def stack() -> np.ndarray:
    return make_stack()


@pytest.fixture
def source(tmp_path: Path, stack: np.ndarray) -> Path:
    return write_fake_site(tmp_path / "site", stack)


def read_mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_labels_to_classes_by_hand():
    nuclei = np.array([[0, 0, 5], [7, 0, 0]], dtype=np.uint16)
    cytoplasm = np.array([[0, 3, 3], [0, 9, 0]], dtype=np.uint16)
    expected = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    result = sample.labels_to_classes(nuclei, cytoplasm)
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, expected)


@settings(max_examples=50, deadline=None)
@given(
    arrays(np.uint16, (3, 4), elements=st.integers(0, 3)),
    arrays(np.uint16, (3, 4), elements=st.integers(0, 3)),
)
def test_labels_to_classes_pixel_rule(nuclei, cytoplasm):
    result = sample.labels_to_classes(nuclei, cytoplasm)
    for (i, j), value in np.ndenumerate(result):
        if nuclei[i, j] != 0:
            assert value == 2
        elif cytoplasm[i, j] != 0:
            assert value == 1
        else:
            assert value == 0


def test_labels_to_classes_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        sample.labels_to_classes(np.zeros((2, 3)), np.zeros((3, 2)))


def check_prepared(root: Path, stack: np.ndarray) -> None:
    """Compare every written file with the source stack, using the class rule written here."""
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    expected_names = ["LICENSE", "classes.txt"]
    for split, frames in (("train", range(8)), ("val", (8, 9))):
        expected_names += [f"images/{split}/t{t:02d}.tif" for t in frames]
        expected_names += [f"masks/{split}/t{t:02d}.png" for t in frames]
    assert names == sorted(expected_names)
    for split, frames in (("train", range(8)), ("val", (8, 9))):
        for t in frames:
            image_path = root / "images" / split / f"t{t:02d}.tif"
            with tifffile.TiffFile(image_path) as tif:
                assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
                image = tif.asarray()
            assert image.shape == (H, W, 2) and image.dtype == np.uint16
            np.testing.assert_array_equal(image[..., 0], stack[0, t])
            np.testing.assert_array_equal(image[..., 1], stack[1, t])
            mask = read_mask(root / "masks" / split / f"t{t:02d}.png")
            expected = np.where(stack[2, t] > 0, 2, np.where(stack[3, t] > 0, 1, 0))
            assert mask.dtype == np.uint8 and mask.shape == (H, W)
            np.testing.assert_array_equal(mask, expected)
    assert (root / "LICENSE").read_text() == LICENSE_TEXT
    assert (root / "classes.txt").read_text() == "background\ncell\nnucleus\n"


def test_prepare_writes_split_images_masks_and_license(tmp_path, source, stack):
    root = sample.prepare_scratch_assay(tmp_path / "out" / "scratch", source=source)
    check_prepared(root, stack)
    assert sample.is_prepared(root)
    assert [p.name for p in root.parent.iterdir()] == ["scratch"]
    assert root.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in root.rglob("*") if p.is_file()} == {0o644}


def test_prepare_reorders_axes_by_name(tmp_path, stack):
    source = write_fake_site(tmp_path / "site", np.transpose(stack, (1, 0, 2, 3)), axes="TCYX")
    root = sample.prepare_scratch_assay(tmp_path / "out", source=source)
    check_prepared(root, stack)


def test_read_stack_rejects_wrong_channel_count(tmp_path, stack):
    source = write_fake_site(tmp_path / "site", stack[:3])
    with pytest.raises(ValueError, match="3 channels"):
        sample.read_stack(source)


def test_existing_root_needs_overwrite(tmp_path, source, stack):
    root = sample.prepare_scratch_assay(tmp_path / "out", source=source)
    with pytest.raises(FileExistsError, match="overwrite"):
        sample.prepare_scratch_assay(root, source=source)
    other = make_stack(seed=1)
    other_source = write_fake_site(tmp_path / "site2", other)
    sample.prepare_scratch_assay(root, source=other_source, overwrite=True)
    check_prepared(root, other)
    assert [p.name for p in root.parent.iterdir() if p.name.startswith(".")] == []


def failing_after(calls: int, real):
    """Wrap ``real`` so that it raises on call number ``calls``."""
    count = {"n": 0}

    def wrapper(*args, **kwargs):
        count["n"] += 1
        if count["n"] == calls:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    return wrapper


def test_failure_midway_leaves_no_partial_root(tmp_path, source, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(sample, "encode_png", failing_after(4, sample.encode_png))
    with pytest.raises(RuntimeError, match="simulated crash"):
        sample.prepare_scratch_assay(out / "scratch", source=source)
    assert list(out.iterdir()) == []


def test_failed_overwrite_keeps_old_root(tmp_path, source, stack, monkeypatch):
    root = sample.prepare_scratch_assay(tmp_path / "out" / "scratch", source=source)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    other_source = write_fake_site(tmp_path / "site2", make_stack(seed=1))
    monkeypatch.setattr(sample, "encode_tiff", failing_after(6, sample.encode_tiff))
    with pytest.raises(RuntimeError, match="simulated crash"):
        sample.prepare_scratch_assay(root, source=other_source, overwrite=True)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert [p.name for p in root.parent.iterdir()] == ["scratch"]


def test_failed_final_rename_restores_old_root(tmp_path, source, monkeypatch):
    root = sample.prepare_scratch_assay(tmp_path / "out" / "scratch", source=source)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    real_replace = io.os.replace

    def replace(src, dst):
        if Path(src).name.startswith(".scratch.partial-") and Path(dst) == root:
            raise OSError("simulated rename failure")
        real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", replace)
    with pytest.raises(OSError, match="simulated rename failure"):
        sample.prepare_scratch_assay(root, source=source, overwrite=True)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert [p.name for p in root.parent.iterdir()] == ["scratch"]


def test_missing_package_error_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(sample, "SOURCE_PACKAGE", "segls_test_no_such_package")
    with pytest.raises(FileNotFoundError) as info:
        sample.prepare_scratch_assay(tmp_path / "out")
    assert "pip install --no-deps ndev-sampledata" in str(info.value)
    assert "python tools/prepare_sample.py" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_missing_source_file_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip install --no-deps ndev-sampledata"):
        sample.prepare_scratch_assay(tmp_path / "out", source=tmp_path / "nope.tiff")
    assert not (tmp_path / "out").exists()


def test_find_source_does_not_import_the_package(tmp_path, stack, monkeypatch):
    site = tmp_path / "site"
    package = "segls_test_heavy_sampledata"
    source = site / package / "samples" / sample.SOURCE_FILE
    source.parent.mkdir(parents=True)
    (site / package / "__init__.py").write_text("raise ImportError('heavy deps imported')\n")
    tifffile.imwrite(source, stack, ome=True, metadata={"axes": "CTYX"})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(sample, "SOURCE_PACKAGE", package)
    importlib.invalidate_caches()
    assert sample.find_source() == source
    with pytest.warns(UserWarning, match="LICENSE"):
        root = sample.ensure_sample(tmp_path / "out")
    assert package not in sys.modules
    assert sample.is_prepared(root)


def test_ensure_sample_keeps_a_prepared_root(tmp_path, source, monkeypatch):
    root = sample.prepare_scratch_assay(tmp_path / "out", source=source)

    def refuse(*args, **kwargs):
        raise AssertionError("prepared root must not be rebuilt")

    monkeypatch.setattr(sample, "prepare_scratch_assay", refuse)
    assert sample.ensure_sample(root) == root


def test_channel_stats_match_numpy(tmp_path, source, stack):
    root = sample.prepare_scratch_assay(tmp_path / "out", source=source)
    mean, std = channel_stats(root, "train")
    train = stack[:2, :8].astype(np.float64) / 65535.0
    np.testing.assert_allclose(mean, train.reshape(2, -1).mean(1), rtol=1e-9)
    np.testing.assert_allclose(std, train.reshape(2, -1).std(1), rtol=1e-7)


def test_channel_stats_missing_split(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare_sample.py"):
        channel_stats(tmp_path, "train")


def test_cli_prints_what_it_wrote(tmp_path, source, capsys):
    cli = prepare_sample_cli
    cli.main(["--root", str(tmp_path / "out"), "--source", str(source)])
    printed = capsys.readouterr().out
    assert "wrote 22 files" in printed and "train mean" in printed


def test_committed_sample_files():
    assert sample.is_prepared(COMMITTED_ROOT), "run python tools/prepare_sample.py --overwrite"
    license_text = (COMMITTED_ROOT / "LICENSE").read_text()
    assert "Copyright (c) 2025, Tim Monko" in license_text
    assert "Redistribution and use in source and binary forms" in license_text
    for split, frames in (("train", range(8)), ("val", (8, 9))):
        stems = sorted(p.stem for p in (COMMITTED_ROOT / "images" / split).glob("*.tif"))
        assert stems == [f"t{t:02d}" for t in frames]
        for t in frames:
            with tifffile.TiffFile(COMMITTED_ROOT / "images" / split / f"t{t:02d}.tif") as tif:
                assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
                image = tif.asarray()
            assert image.shape == (210, 576, 2) and image.dtype == np.uint16
            assert image.min() > 0
            mask_path = COMMITTED_ROOT / "masks" / split / f"t{t:02d}.png"
            assert Image.open(mask_path).mode == "L"
            mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
            assert mask.shape == (210, 576) and mask.dtype == np.uint8
            assert set(np.unique(mask).tolist()) == {0, 1, 2}


def test_channel_stats_with_percentile_scaling_match_numpy(tmp_path, source, stack):
    root = sample.prepare_scratch_assay(tmp_path / "out", source=source)
    mean, std = channel_stats(root, "train", [1.0, 99.8])
    scaled = []
    for t in range(8):  # each frame and channel scaled by its own 1st and 99.8th percentiles
        for c in range(2):
            frame = stack[c, t].astype(np.float64)
            low, high = np.percentile(frame, [1.0, 99.8])
            scaled.append(((frame - low) / (high - low)).ravel())
    per_channel = np.stack([np.concatenate(scaled[c::2]) for c in range(2)])
    np.testing.assert_allclose(mean, per_channel.mean(1), rtol=1e-5)
    np.testing.assert_allclose(std, per_channel.std(1), rtol=1e-5)
