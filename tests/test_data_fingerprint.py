"""segls.data.fingerprint: every field against numpy on the arrays the test wrote.

Datasets are written here (8-bit RGB PNGs, 16-bit two-channel TIFFs, float TIFFs, masks as
PNGs); expected values come from numpy (and scipy for skewness) applied to those arrays,
never from segls' own output.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import tifffile
from helpers import (
    CITYSCAPES_TRAIN_IDS,
    SIZE,
    blob_mask,
    make_ade20k,
    make_cityscapes,
    make_dataset,
    pixels_of,
    write_pair,
)
from PIL import Image

from segls.config import DataConfig
from segls.data import DataError, build_dataset, resolve_classes
from segls.data.classes import read_class_names
from segls.data.fingerprint import Fingerprint, fingerprint
from segls.data.image_stats import hamming_distances, histogram_percentiles
from segls.data.inventory import propose_split, survey

PERCENTILES = [1.0, 99.8]
DTYPE_MAX = {"rgb8": 255.0, "u16x2": 65535.0, "float1": 1.0, "float01": 1.0}


def scan(root: Path, fmt: str = "folder") -> Fingerprint:
    """The fingerprint of the dataset at `root`, with the default percentiles."""
    return fingerprint(survey(root, fmt), PERCENTILES)


@pytest.mark.parametrize("kind", ["rgb8", "u16x2", "float1"])
def test_intensity_fields_match_numpy(tmp_path, kind):
    written = make_dataset(tmp_path, kind)
    fp = scan(tmp_path)
    train = written["train"]
    pixels = pixels_of(train)
    totals = fp.train.main_intensity()
    binned = pixels.astype(np.float16) if kind == "float1" else pixels  # floats: float16 bins
    for channel in range(pixels.shape[1]):
        values, counts = np.unique(binned[:, channel], return_counts=True)
        nonzero = np.flatnonzero(totals.histogram[channel])
        order = np.argsort(totals.bin_values[nonzero])
        np.testing.assert_array_equal(totals.bin_values[nonzero][order], values.astype(np.float64))
        np.testing.assert_array_equal(totals.histogram[channel][nonzero][order], counts)
        qs = [0.1, 1, 50, 99.8]
        expected = np.percentile(binned[:, channel].astype(np.float64), qs)
        got = histogram_percentiles(totals.bin_values, totals.histogram[channel], qs)
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_array_equal(totals.minimum, pixels.min(0))
    np.testing.assert_array_equal(totals.maximum, pixels.max(0))
    mean, std = totals.mean_std("dtype")
    scaled = pixels.astype(np.float64) / DTYPE_MAX[kind]
    np.testing.assert_allclose(mean, scaled.mean(0), rtol=1e-9)
    np.testing.assert_allclose(std, scaled.std(0), rtol=1e-9)
    per_image = []
    for (_, image, _), record in zip(train, fp.train.records, strict=True):
        flat = image.reshape(-1, image.shape[-1]).astype(np.float64)
        low, high = np.percentile(flat, PERCENTILES, axis=0)
        np.testing.assert_allclose(record.bounds, [low, high], rtol=1e-6)
        scaled_image = ((image - low) / (high - low)).astype(np.float64)
        per_image.append(scaled_image.reshape(-1, image.shape[-1]))
        for axis_index, axis in enumerate((1, 0)):
            steps = np.diff(scaled_image, axis=axis).reshape(-1, image.shape[-1])
            np.testing.assert_allclose(
                record.gradient_skew[axis_index], scipy.stats.skew(steps, axis=0), rtol=1e-3,
                atol=1e-4,
            )  # fmt: skip
            np.testing.assert_allclose(record.gradient_var[axis_index], steps.var(0), rtol=1e-4)
        assert (record.height, record.width, record.channels) == image.shape
        assert record.dtype == str(image.dtype)
    mean, std = totals.mean_std("percentile")
    np.testing.assert_allclose(mean, np.concatenate(per_image).mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, np.concatenate(per_image).std(0), rtol=1e-5)


def test_split_and_class_fields_match_numpy(tmp_path):
    written = make_dataset(tmp_path, "rgb8", num_classes=4)
    fp = scan(tmp_path)
    assert (fp.train_split, fp.val_split) == ("train", "val")
    assert fp.class_names == [f"name{c}" for c in range(4)] and fp.ignore_index == 255
    for split in ("train", "val"):
        masks = [mask for _, _, mask in written[split]]
        assert len(fp.splits[split].records) == len(masks)
        table = fp.class_table(split)
        for c in range(4):
            assert table["pixels"][c] == sum(int((m == c).sum()) for m in masks)
            assert table["images"][c] == sum(bool((m == c).any()) for m in masks)
            rows = np.concatenate([(np.nonzero(m == c)[0] + 0.5) / m.shape[0] for m in masks])
            cols = np.concatenate([(np.nonzero(m == c)[1] + 0.5) / m.shape[1] for m in masks])
            np.testing.assert_allclose(
                [table["row"][c], table["col"][c]], [rows.mean(), cols.mean()]
            )
        assert table["ignore"] == sum(int((m == 255).sum()) for m in masks)
        assert table["invalid"] == 0
        for record, mask in zip(fp.splits[split].records, masks, strict=True):
            np.testing.assert_array_equal(record.mask_values, np.unique(mask))
    assert not fp.problems


def test_sixteen_bit_two_channel_and_single_channel_float(tmp_path):
    make_dataset(tmp_path / "u16", "u16x2")
    make_dataset(tmp_path / "f", "float1")
    for root, dtype, channels in ((tmp_path / "u16", "uint16", 2), (tmp_path / "f", "float32", 1)):
        fp = scan(root)
        assert {r.dtype for r in fp.train.records} == {dtype}
        assert {r.channels for r in fp.train.records} == {channels}


def test_class_names_from_classes_txt_and_training_reads_them(tmp_path):
    make_dataset(tmp_path, "rgb8", num_classes=3)
    assert read_class_names(tmp_path) == ["name0", "name1", "name2"]
    cfg = DataConfig(root=str(tmp_path), num_classes=3, mean=[0.5] * 3, std=[0.2] * 3)
    assert resolve_classes(cfg)[0] == ["name0", "name1", "name2"]
    assert build_dataset(cfg, "train", train=False).class_names == ["name0", "name1", "name2"]
    wrong = DataConfig(root=str(tmp_path), num_classes=4)
    with pytest.raises(ValueError, match="classes.txt has 3 classes but data.num_classes=4"):
        resolve_classes(wrong)
    (tmp_path / "classes.txt").write_text("a\n\nb\n")
    with pytest.raises(DataError, match="line 2 is blank"):
        read_class_names(tmp_path)
    (tmp_path / "classes.txt").write_text("a\nb\na\n")
    with pytest.raises(DataError, match="repeats the name 'a'"):
        read_class_names(tmp_path)


def sha_first(stems: list[str], count: int) -> list[str]:
    """The `count` stems whose SHA-256 hex digests sort first (the rule, worked here)."""
    return sorted(sorted(stems, key=lambda s: hashlib.sha256(s.encode()).hexdigest())[:count])


@pytest.mark.parametrize("layout", ["train_only", "flat"])
def test_missing_val_split_is_proposed_deterministically(tmp_path, layout):
    written = make_dataset(tmp_path, "rgb8", counts={"train": 10})
    if layout == "flat":
        for kind in ("images", "masks"):
            for path in (tmp_path / kind / "train").iterdir():
                path.rename(tmp_path / kind / path.name)
            (tmp_path / kind / "train").rmdir()
    inventory = survey(tmp_path)
    stems = [stem for stem, _, _ in written["train"]]
    val = sha_first(stems, 2)  # 20 % of 10
    prefix = "train/" if layout == "train_only" else ""
    assert inventory.proposed_lists["auto_val.txt"] == [prefix + s for s in val]
    assert len(inventory.proposed_lists["auto_train.txt"]) == 8
    assert [p.kind for p in inventory.problems] == ["no_val_split"]
    assert not inventory.problems[0].blocking
    for name, lines in inventory.proposed_lists.items():
        (tmp_path / name).write_text("".join(f"{line}\n" for line in lines))
    cfg = DataConfig(root=str(tmp_path), num_classes=3, mean=[0.5] * 3, std=[0.2] * 3)
    dataset = build_dataset(cfg, "auto_val", train=False)
    assert [p.stem for p in dataset.image_paths] == val
    assert propose_split(list(reversed(stems))) == propose_split(stems)
    (tmp_path / "escape.txt").write_text("../train0\n")
    with pytest.raises(DataError, match="inside images/ and masks/"):
        build_dataset(cfg, "escape", train=False)


def problem_kinds(root: Path) -> dict[str, object]:
    """{kind: problem} of the fingerprint of `root`."""
    return {problem.kind: problem for problem in scan(root).problems}


def test_missing_and_extra_masks_are_named(tmp_path):
    make_dataset(tmp_path, "rgb8")
    (tmp_path / "masks" / "train" / "train1.png").unlink()
    (tmp_path / "masks" / "train" / "stray.png").write_bytes(
        (tmp_path / "masks" / "train" / "train2.png").read_bytes()
    )
    problems = problem_kinds(tmp_path)
    assert "train1" in problems["missing_mask"].message and problems["missing_mask"].blocking
    assert "stray" in problems["extra_mask"].message and problems["extra_mask"].blocking


def test_size_mismatch_values_not_classes_and_unreadable(tmp_path):
    make_dataset(tmp_path, "rgb8")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "masks" / "train" / "train0.png")
    bad = blob_mask(np.random.default_rng(1), 3)
    bad[:3, :3] = 7
    Image.fromarray(bad).save(tmp_path / "masks" / "val" / "val1.png")
    (tmp_path / "images" / "train" / "train3.png").write_bytes(b"not a png")
    fp = scan(tmp_path)
    problems = {problem.kind: problem for problem in fp.problems}
    assert fp.class_table("val")["invalid"] == 9  # the 3x3 block of 7s
    assert "10x12" in problems["size_mismatch"].message
    assert (
        "[7]" in problems["not_a_class"].message and "val1.png" in problems["not_a_class"].message
    )
    assert "train3.png" in problems["unreadable"].message
    assert all(problems[k].blocking for k in ("size_mismatch", "not_a_class", "unreadable"))


def test_empty_val_split_channels_and_nan(tmp_path):
    make_dataset(tmp_path / "a", "rgb8", counts={"train": 6})
    (tmp_path / "a" / "images" / "val").mkdir()
    gray = np.full((*SIZE, 1), 7, np.uint8)
    tifffile.imwrite(tmp_path / "a" / "images" / "train" / "train5.tif", gray[..., 0])
    (tmp_path / "a" / "images" / "train" / "train5.png").unlink()
    problems = problem_kinds(tmp_path / "a")
    assert problems["empty_split"].blocking and "no_val_split" in problems
    assert "train5.tif" in problems["channels"].message
    make_dataset(tmp_path / "b", "float1")
    image = tifffile.imread(tmp_path / "b" / "images" / "train" / "train2.tif")
    image[0, 0] = np.nan
    tifffile.imwrite(tmp_path / "b" / "images" / "train" / "train2.tif", image)
    assert "train2.tif" in problem_kinds(tmp_path / "b")["not_finite"].message


def test_binary_masks_stored_as_255_and_classes_only_in_val(tmp_path):
    make_dataset(tmp_path / "a", "rgb8", classes_file=False)
    for path in (tmp_path / "a" / "masks").rglob("*.png"):
        mask = np.asarray(Image.open(path))
        Image.fromarray(np.where(mask == 1, 255, 0).astype(np.uint8)).save(path)
    assert "mask // 255" in problem_kinds(tmp_path / "a")["single_class"].message
    make_dataset(tmp_path / "b", "rgb8", num_classes=2)
    (tmp_path / "b" / "classes.txt").write_text("a\nb\nc\n")
    mask = blob_mask(np.random.default_rng(2), 3)
    Image.fromarray(mask).save(tmp_path / "b" / "masks" / "val" / "val0.png")
    assert "2 'c'" in problem_kinds(tmp_path / "b")["class_not_in_train"].message


def test_near_duplicates_across_train_and_val(tmp_path):
    written = make_dataset(tmp_path, "rgb8")
    _, image, mask = written["train"][3]
    noisy = image.astype(np.int64) + np.random.default_rng(3).integers(-3, 4, image.shape)
    write_pair(tmp_path, "val", "val0", noisy.clip(0, 255).astype(np.uint8), mask)
    problem = problem_kinds(tmp_path)["near_duplicate"]
    assert "val0.png ~" in problem.message and "train3.png" in problem.message
    assert "val1" not in problem.message and not problem.blocking


def test_hamming_distances_count_differing_bits():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 256, (3, 32), dtype=np.uint8)
    others = rng.integers(0, 256, (4, 32), dtype=np.uint8)
    expected = [[bin(int.from_bytes(a.tobytes()) ^ int.from_bytes(b.tobytes())).count("1")
                 for b in others] for a in hashes]  # fmt: skip
    np.testing.assert_array_equal(hamming_distances(hashes, others), expected)


def test_public_formats_count_classes_as_training_maps_them(tmp_path):
    annotation = np.array([[0, 1, 2, 150], [75, 0, 150, 1]], np.uint8)
    for folder in ("training", "validation"):
        make_ade20k(tmp_path / "ade", annotation, folder)
    fp = scan(tmp_path / "ade", "ade20k")
    assert fp.reduce_zero_label and fp.num_classes == 150 and fp.class_names[0] == "wall"
    table = fp.class_table("train")  # ADE20K: 0 is ignored, v is class v - 1
    expected = {c: int((annotation == c + 1).sum()) for c in range(150)}
    assert {c: int(table["pixels"][c]) for c in range(150)} == expected
    assert table["ignore"] == 2
    label_ids = np.arange(0, 36, dtype=np.uint8).reshape(4, 9)
    for split in ("train", "val"):
        make_cityscapes(tmp_path / "cs", label_ids, "labelIds", split=split)
    fp = scan(tmp_path / "cs", "cityscapes")
    assert fp.cityscapes_labels == "labelIds" and fp.num_classes == 19
    table = fp.class_table("train")  # two cities, each label id once per image
    expected = [2 * sum(1 for v in CITYSCAPES_TRAIN_IDS.values() if v == t) for t in range(19)]
    assert table["pixels"].tolist() == expected
    assert table["ignore"] == 2 * 36 - sum(expected)
    assert [p.kind for p in fp.problems] == ["near_duplicate"]  # the helper writes one image
