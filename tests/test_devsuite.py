"""Tests of the development suite: seeded, read by segls, and each set has the property it is for."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from benchmarks.cli import make_devsuite as cli
from benchmarks.devsuite import real, suite
from benchmarks.devsuite.synthetic import (
    OCCASIONAL_PERIOD,
    RARE_OCCASIONAL,
    RARE_SPECK,
    SYNTHETIC,
)
from benchmarks.devsuite.writer import image_rng
from segls.config import DataConfig
from segls.data.fingerprint import fingerprint
from segls.data.inventory import survey

SMALL_COUNTS = {"train": 4, "val": 4}  # index 3 is in both: the rare set's occasional class
SMALL_SIZE = (64, 80)


def file_bytes(root: Path) -> dict[str, bytes]:
    """Every file under `root`, by relative path."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def draws(name: str, count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` training pairs of a synthetic set at its default size, without writing them."""
    spec = SYNTHETIC[name]
    return [spec.draw(image_rng(seed, name, "train", i), i, spec.size) for i in range(count)]


@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_a_seed_makes_the_same_bytes_and_another_seed_other_ones(tmp_path, name):
    def make(folder: str, seed: int) -> dict[str, bytes]:
        root = suite.make_set(name, tmp_path / folder, seed, size=SMALL_SIZE, counts=SMALL_COUNTS)
        return file_bytes(root)

    first, again, other = make("a", 1), make("b", 1), make("c", 2)
    assert first == again
    assert first.keys() == other.keys()
    assert first != other
    assert not list(tmp_path.glob("*/.*partial*"))  # the staging folders are gone


@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_segls_reads_each_synthetic_set_with_its_class_names(tmp_path, name):
    root = suite.make_set(name, tmp_path, size=SMALL_SIZE, counts=SMALL_COUNTS)
    found = fingerprint(survey(root), DataConfig().percentiles)
    assert [p.message for p in found.problems if p.blocking] == []
    assert found.class_names == list(SYNTHETIC[name].classes)
    assert found.class_source != "mask values"
    assert (found.train_split, found.val_split) == ("train", "val")
    assert len(found.train.records) == len(found.val.records) == 4
    table = found.class_table("train")
    assert table["invalid"] == 0 and table["ignore"] == 0


def test_an_existing_set_needs_overwrite(tmp_path):
    suite.make_set("thin", tmp_path, size=SMALL_SIZE, counts=SMALL_COUNTS)
    with pytest.raises(FileExistsError, match="--overwrite"):
        suite.make_set("thin", tmp_path, size=SMALL_SIZE, counts=SMALL_COUNTS)
    suite.make_set("thin", tmp_path, seed=3, overwrite=True, size=SMALL_SIZE, counts=SMALL_COUNTS)
    with pytest.raises(ValueError, match="unknown development set"):
        suite.make_set("nope", tmp_path)


def test_rare_one_class_is_under_a_percent_of_pixels_and_one_is_in_few_images():
    masks = [mask for _, mask in draws("rare", 2 * OCCASIONAL_PERIOD)]
    pixels = np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=8)
    assert pixels[RARE_SPECK] / pixels.sum() < 0.01
    assert all((m == RARE_SPECK).any() for m in masks)
    holding = [i for i, m in enumerate(masks) if (m == RARE_OCCASIONAL).any()]
    assert holding == [3, 3 + OCCASIONAL_PERIOD]
    assert all(pixels[1:6] / pixels.sum() > 0.005)  # the common classes are not rare


def test_thin_vessels_are_one_to_three_pixels_wide():
    kernel = np.ones((3, 3), np.uint8)
    vessel_pixels = survivors = 0
    for _, mask in draws("thin", 6):
        vessel = np.pad(mask == 1, 2).astype(np.uint8)  # the border erodes too
        assert vessel.mean() > 0.003
        vessel_pixels += int(vessel.sum())
        survivors += int(cv2.erode(vessel, kernel, iterations=2).sum())  # none where ≤ 3 px
        cells = (mask == 2).astype(np.uint8)
        assert cv2.erode(cells, kernel, iterations=2).sum() > 0  # the cells are not thin
    assert survivors < 0.02 * vessel_pixels  # only where two vessels cross


def test_many_has_twenty_classes_and_each_hue_is_its_own_colour():
    assert len(SYNTHETIC["many"].classes) == 20
    pairs = draws("many", 12)
    present = set(np.concatenate([np.unique(mask) for _, mask in pairs]).tolist())
    assert len(present) >= 15
    image, mask = pairs[0]
    assert image.shape == (*mask.shape, 3)
    means = {c: image[mask == c].mean(axis=0) for c in np.unique(mask) if (mask == c).sum() > 50}
    colours = np.array(list(means.values()))
    gaps = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
    assert gaps[~np.eye(len(colours), dtype=bool)].min() > 10


def test_textured_classes_share_brightness_and_differ_in_texture():
    sums, squares, counts, roughness = (np.zeros(5) for _ in range(4))
    for image, mask in draws("textured", 6):
        grey = image.astype(np.float64).mean(axis=-1) / image.mean()
        step = np.abs(np.diff(grey, axis=1))
        for c in range(5):
            inside = mask == c
            sums[c] += grey[inside].sum()
            squares[c] += (grey[inside] ** 2).sum()
            counts[c] += inside.sum()
            roughness[c] += step[inside[:, 1:]].sum()
    means = sums / counts
    assert np.ptp(means) < 0.05  # brightness alone does not tell the classes apart
    stds = np.sqrt(squares / counts - means**2)
    assert stds.max() / stds.min() < 1.5
    assert roughness.max() / roughness.min() > 2  # the textures do


def test_large_images_hold_small_sparse_objects():
    image, mask = draws("large", 1)[0]
    assert image.shape == (1024, 1024)
    assert 0 < (mask > 0).mean() < 0.01
    _, _, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8))
    areas = stats[1:, cv2.CC_STAT_AREA]
    assert len(areas) > 30
    assert np.median(areas) < 100 and areas.max() < 400


def test_fluo16_is_16_bit_with_intensity_drift_between_images():
    nucleus_levels = []
    for image, mask in draws("fluo16", 8):
        assert image.dtype == np.uint16 and image.ndim == 2
        nucleus_levels.append(np.median(image[mask == 2]) - np.median(image[mask == 0]))
    assert max(nucleus_levels) / min(nucleus_levels) > 4


def test_boundary_classes_mark_the_edge_of_each_instance():
    labels = np.zeros((6, 8), np.uint16)
    labels[1:5, 1:4] = 1
    labels[1:5, 4:7] = 2
    classes = real.boundary_classes(labels)
    assert classes[0].tolist() == [0] * 8
    assert classes[2].tolist() == [0, 2, 1, 2, 2, 1, 2, 0]  # the two touching nuclei part
    assert classes[1, 1:7].tolist() == [2] * 6
    assert set(np.unique(classes[labels == 0])) == {0}


def fake_package(site: Path, source: real.RealSource, shape: tuple[int, ...]) -> Path:
    """An installed-package look-alike holding random image and instance-label TIFFs."""
    folder = site / source.package
    rng = np.random.default_rng(0)
    labels = np.zeros(shape, np.uint16)
    labels[..., 10:30, 10:30] = 1
    labels[..., 40:60, 100:130] = 2
    if len(shape) == 3:
        labels[0] = 0  # an unlabelled slice is left out
    image = rng.integers(0, 4000, shape, dtype=np.uint16)
    for name, array in zip(source.files, (image, labels), strict=True):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(folder / name, array, photometric="minisblack")
    dist = site / f"{source.distribution.replace('-', '_')}-{source.version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "LICENSE").write_text("BSD-3-Clause, fake\n")
    return folder


@pytest.mark.parametrize(
    ("name", "shape", "counts"),
    [("nuclei_dsb", (512, 512), (40, 24)), ("nuclei3d", (3, 256, 256), (2, 2))],
)
def test_real_converters_write_boundary_classes_and_the_licence(tmp_path, name, shape, counts):
    source, _, _ = real.REAL[name]
    folder = fake_package(tmp_path / "site", source, shape)
    root = suite.make_set(name, tmp_path / "out", source=folder)
    found = fingerprint(survey(root), DataConfig().percentiles)
    assert [p.message for p in found.problems if p.blocking] == []
    assert found.class_names == list(real.BOUNDARY_CLASSES)
    assert (len(found.train.records), len(found.val.records)) == counts
    assert (root / "LICENSE").read_text() == "BSD-3-Clause, fake\n"
    first = sorted((root / "images" / "train").iterdir())[0]
    assert tifffile.imread(first).dtype == np.uint16


def test_a_missing_source_package_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(real.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps stardist==0.9.2"):
        suite.make_set("nuclei_dsb", tmp_path)
    monkeypatch.setattr(cli, "SET_NAMES", ("nuclei_dsb",))
    assert cli.run(["--out", str(tmp_path)]) == 0  # skipped when not named
    assert cli.run(["--out", str(tmp_path), "--sets", "nuclei_dsb"]) == 1


def test_the_command_describes_what_it_wrote(tmp_path, capsys):
    root = suite.make_set("fluo16", tmp_path, size=SMALL_SIZE, counts=SMALL_COUNTS)
    text = cli.describe(root, 1.0)
    assert "3 classes, train 4, val 4" in text
    assert "background, cell, nucleus" in text
