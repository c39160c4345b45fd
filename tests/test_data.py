"""Tests for segls.data: dataset layouts, label mapping, checks, caching and data loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from helpers import (
    CITYSCAPES_TRAIN_IDS,
    make_ade20k,
    make_cityscapes,
    write_gray_mask,
    write_rgb,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from segls.config import Config, DataConfig, validate
from segls.data import DataError, LabelMapper, build_dataloader, build_dataset

IGNORE = 255


def make_cfg(root: Path, **overrides) -> DataConfig:
    """Tiny-dataset DataConfig: RGB, 8×8 crops, main-process loading."""
    base = dict(root=str(root), crop_size=[8, 8], batch_size=2, num_workers=0)
    base.update(overrides)
    return DataConfig(**base)


def write_palette_mask(path: Path, indices: np.ndarray) -> None:
    """Mode-P PNG with a VOC-like palette, as in SegmentationClass/."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = Image.fromarray(indices.astype(np.uint8), mode="P")
    mask.putpalette([value for i in range(256) for value in ((i * 37) % 256, i, 255 - i)])
    mask.save(path)


def random_mask(height: int, width: int, values: list[int], seed: int = 0) -> np.ndarray:
    """H×W uint8 mask drawn from ``values``."""
    return np.random.default_rng(seed).choice(np.asarray(values, np.uint8), (height, width))


def make_folder(root: Path, split: str = "train", stems=("a", "b", "c"), values=(0, 1, 2)):
    """root/images/<split>/<stem>.png + root/masks/<split>/<stem>.png."""
    masks = {}
    for i, stem in enumerate(stems):
        write_rgb(root / "images" / split / f"{stem}.png", seed=i)
        masks[stem] = random_mask(6, 7, list(values), seed=i)
        write_gray_mask(root / "masks" / split / f"{stem}.png", masks[stem])
    return masks


# ---------------------------------------------------------------- formats


def test_folder_split_dirs(tmp_path):
    masks = make_folder(tmp_path, "val")
    tifffile.imwrite(tmp_path / "images" / "val" / "d.tif", np.zeros((6, 7, 3), np.uint8))
    write_gray_mask(tmp_path / "masks" / "val" / "d.png", np.full((6, 7), IGNORE))
    (tmp_path / "images" / "val" / "notes.txt").write_text("not an image")
    dataset = build_dataset(make_cfg(tmp_path), "val", train=False)
    assert [p.name for p in dataset.image_paths] == ["a.png", "b.png", "c.png", "d.tif"]
    assert [p.name for p in dataset.label_paths] == ["a.png", "b.png", "c.png", "d.png"]
    assert dataset.class_names == ["class_0", "class_1", "class_2"]
    assert len({tuple(colour) for colour in dataset.palette}) == 3
    image, label = dataset[1]
    assert image.dtype == torch.float32 and image.shape == (3, 6, 7)
    assert label.dtype == torch.int64
    np.testing.assert_array_equal(label.numpy(), masks["b"])


def test_folder_list_file_flat_or_split_dirs(tmp_path):
    write_rgb(tmp_path / "images" / "one.png")
    write_rgb(tmp_path / "images" / "train" / "two.jpg")
    write_gray_mask(tmp_path / "masks" / "one.png", np.zeros((6, 7)))
    write_gray_mask(tmp_path / "masks" / "two.png", np.ones((6, 7)))
    write_rgb(tmp_path / "images" / "unlisted.png")
    (tmp_path / "train.txt").write_text("two\n\none\n")
    dataset = build_dataset(make_cfg(tmp_path), "train", train=True)
    assert [p.name for p in dataset.image_paths] == ["two.jpg", "one.png"]
    assert [p.name for p in dataset.label_paths] == ["two.png", "one.png"]
    (tmp_path / "train.txt").write_text("one\nthree\n")
    with pytest.raises(DataError, match="three"):
        build_dataset(make_cfg(tmp_path), "train", train=True)


def make_voc(root: Path, indices: dict[str, np.ndarray], split: str = "val") -> Path:
    """VOCdevkit/VOC2012 with JPEGImages, SegmentationClass (palette) and a split list."""
    voc = root / "VOCdevkit" / "VOC2012"
    for i, (stem, mask) in enumerate(indices.items()):
        write_rgb(voc / "JPEGImages" / f"{stem}.jpg", *mask.shape, seed=i)
        write_palette_mask(voc / "SegmentationClass" / f"{stem}.png", mask)
    split_file = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
    split_file.parent.mkdir(parents=True)
    split_file.write_text("".join(f"{stem}\n" for stem in indices))
    return voc


def test_voc_palette_masks_are_read_as_indices(tmp_path):
    first = random_mask(5, 8, [0, 15, 20, IGNORE], seed=1)
    second = random_mask(7, 4, [0, 1, 12, IGNORE], seed=2)
    voc = make_voc(tmp_path, {"2007_000032": first, "2007_000039": second})
    for root in (voc, voc.parent):
        dataset = build_dataset(make_cfg(root, format="voc", num_classes=21), "val", train=False)
        assert [p.stem for p in dataset.image_paths] == ["2007_000032", "2007_000039"]
        np.testing.assert_array_equal(dataset[0][1].numpy(), first)
        np.testing.assert_array_equal(dataset[1][1].numpy(), second)
    assert dataset.class_names[0] == "background" and dataset.class_names[15] == "person"
    assert len(dataset.class_names) == 21
    # Standard VOC colours: background, aeroplane, person, tvmonitor.
    assert dataset.palette[0] == [0, 0, 0] and dataset.palette[1] == [128, 0, 0]
    assert dataset.palette[15] == [192, 128, 128] and dataset.palette[20] == [0, 64, 128]
    assert len({tuple(colour) for colour in dataset.palette}) == 21


def test_voc_missing_split_list_names_it(tmp_path):
    voc = make_voc(tmp_path, {"x": np.zeros((4, 4), np.uint8)})
    with pytest.raises(DataError, match="train.txt"):
        build_dataset(make_cfg(voc, format="voc", num_classes=21), "train", train=False)


def test_cityscapes_label_ids_map_to_train_ids(tmp_path):
    label_ids = np.arange(0, 36, dtype=np.uint8).reshape(4, 9)
    label_ids[0, 0] = IGNORE
    make_cityscapes(tmp_path, label_ids, "labelIds")
    cfg = make_cfg(tmp_path, format="cityscapes", num_classes=19, cityscapes_labels="labelIds")
    dataset = build_dataset(cfg, "val", train=False)
    assert [p.parent.name for p in dataset.image_paths] == ["frankfurt", "lindau"]
    assert dataset.label_paths[0].name == "frankfurt_000000_000294_gtFine_labelIds.png"
    expected = np.vectorize(lambda v: CITYSCAPES_TRAIN_IDS.get(int(v), IGNORE))(label_ids)
    np.testing.assert_array_equal(dataset[0][1].numpy(), expected)
    assert dataset.class_names[0] == "road" and dataset.class_names[18] == "bicycle"
    assert dataset.palette[0] == [128, 64, 128] and dataset.palette[13] == [0, 0, 142]


def test_cityscapes_train_ids_and_wrong_kind_hint(tmp_path):
    train_ids = random_mask(4, 5, list(range(19)) + [IGNORE])
    make_cityscapes(tmp_path, train_ids, "labelTrainIds")
    cfg = make_cfg(tmp_path, format="cityscapes", num_classes=19)
    np.testing.assert_array_equal(build_dataset(cfg, "val", False)[1][1].numpy(), train_ids)
    cfg.cityscapes_labels = "labelIds"
    with pytest.raises(DataError, match="labelIds"):
        build_dataset(cfg, "val", train=False)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=1, max_size=40))
def test_label_ids_lookup_matches_table(values):
    cfg = DataConfig(format="cityscapes", num_classes=19, cityscapes_labels="labelIds")
    mask = np.asarray(values, np.uint8).reshape(1, -1)
    expected = [CITYSCAPES_TRAIN_IDS.get(v, IGNORE) for v in values]
    np.testing.assert_array_equal(LabelMapper(cfg)(mask)[0], expected)


def test_ade20k_reduce_zero_label(tmp_path):
    annotation = np.array([[0, 1, 2, 150], [75, 0, 150, 1]], np.uint8)
    make_ade20k(tmp_path, annotation, "training")
    make_ade20k(tmp_path, annotation, "validation")
    cfg = make_cfg(tmp_path, format="ade20k", num_classes=150, reduce_zero_label=True)
    expected = np.where(annotation == 0, IGNORE, annotation.astype(np.int64) - 1)
    for split in ("train", "training", "val"):
        dataset = build_dataset(cfg, split, train=False)
        np.testing.assert_array_equal(dataset[0][1].numpy(), expected)
    assert len(dataset.class_names) == 150
    assert dataset.class_names[:3] == ["wall", "building", "sky"]
    assert len({tuple(colour) for colour in dataset.palette}) == 150
    cfg.reduce_zero_label = False
    with pytest.raises(DataError, match=r"ADE_val_00000001\.png.*150.*reduce_zero_label"):
        build_dataset(cfg, "val", train=False)[0]


def test_class_names_and_palette_overrides_and_mismatches(tmp_path):
    make_folder(tmp_path)
    names, palette = ["bg", "cell", "nucleus"], [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    dataset = build_dataset(make_cfg(tmp_path, class_names=names, palette=palette), "train", True)
    assert dataset.class_names == names and dataset.palette == palette
    with pytest.raises(ValueError, match="num_classes"):
        build_dataset(make_cfg(tmp_path, class_names=["a", "b"]), "train", True)
    with pytest.raises(ValueError, match="num_classes"):
        build_dataset(make_cfg(tmp_path, palette=[[0, 0, 0]]), "train", True)
    with pytest.raises(ValueError, match="21"):
        build_dataset(make_cfg(tmp_path, format="voc", num_classes=3), "train", True)


# ---------------------------------------------------------------- bad data


def test_missing_pairs_name_the_stems(tmp_path):
    make_folder(tmp_path)
    write_rgb(tmp_path / "images" / "train" / "lonely_image.png")
    write_gray_mask(tmp_path / "masks" / "train" / "lonely_mask.png", np.zeros((6, 7)))
    with pytest.raises(DataError, match="lonely_image") as error:
        build_dataset(make_cfg(tmp_path), "train", train=True)
    assert "lonely_mask" in str(error.value)


def test_size_mismatch_names_file_and_sizes(tmp_path):
    make_folder(tmp_path)
    write_gray_mask(tmp_path / "masks" / "train" / "b.png", np.zeros((5, 7)))
    dataset = build_dataset(make_cfg(tmp_path), "train", train=True)
    with pytest.raises(DataError, match=r"b\.png.*5x7.*6x7"):
        dataset[1]


def test_bad_mask_values_name_file_and_values(tmp_path):
    make_folder(tmp_path)
    write_gray_mask(tmp_path / "masks" / "train" / "c.png", np.array([[0, 7], [1, 200]]))
    write_rgb(tmp_path / "images" / "train" / "c.png", 2, 2)
    dataset = build_dataset(make_cfg(tmp_path), "train", train=True)
    dataset[0]
    with pytest.raises(DataError, match=r"c\.png.*\[7, 200\]"):
        dataset[2]


def test_sixteen_bit_mask_values_are_checked(tmp_path):
    make_folder(tmp_path, stems=("a",))
    Image.fromarray(np.array([[0, 1], [2, 1000]], np.uint16)).save(
        tmp_path / "masks" / "train" / "a.png"
    )
    write_rgb(tmp_path / "images" / "train" / "a.png", 2, 2)
    with pytest.raises(DataError, match=r"a\.png.*1000"):
        build_dataset(make_cfg(tmp_path), "train", train=True)[0]


def test_channel_mismatch_names_file_counts_and_setting(tmp_path):
    make_folder(tmp_path, stems=("a",))
    image = np.zeros((6, 7, 2), np.uint16)
    tifffile.imwrite(tmp_path / "images" / "train" / "a.tif", image, photometric="minisblack")
    (tmp_path / "images" / "train" / "a.png").unlink()
    dataset = build_dataset(make_cfg(tmp_path), "train", train=True)
    with pytest.raises(DataError, match=r"a\.tif.*2 channels.*in_channels=3.*in_channels=2"):
        dataset[0]


def test_empty_split_and_missing_dirs_name_the_directory(tmp_path):
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "masks" / "val").mkdir(parents=True)
    with pytest.raises(DataError, match=str(tmp_path / "images" / "val")):
        build_dataset(make_cfg(tmp_path), "val", train=False)
    with pytest.raises(DataError, match=str(tmp_path / "images" / "test")):
        build_dataset(make_cfg(tmp_path), "test", train=False)
    with pytest.raises(DataError, match="nowhere"):
        build_dataset(make_cfg(tmp_path / "nowhere"), "val", train=False)
    with pytest.raises(DataError, match="leftImg8bit"):
        build_dataset(make_cfg(tmp_path, format="cityscapes", num_classes=19), "val", False)


def test_corrupt_image_is_named(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "images" / "train" / "b.png").write_bytes(b"truncated")
    dataset = build_dataset(make_cfg(tmp_path), "train", train=True)
    with pytest.raises(DataError, match=r"b\.png"):
        dataset[1]


# ---------------------------------------------------------------- cache and loaders


def test_cache_keeps_decoded_arrays(tmp_path):
    make_folder(tmp_path)
    cached = build_dataset(make_cfg(tmp_path, cache=True), "train", train=False)
    uncached = build_dataset(make_cfg(tmp_path), "train", train=False)
    before = cached[0]
    (tmp_path / "images" / "train" / "a.png").unlink()
    after = cached[0]
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    with pytest.raises(FileNotFoundError, match="a.png"):
        uncached[0]


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every batch of one pass over ``loader``."""
    return [(images.clone(), labels.clone()) for images, labels in loader]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_train_loader_is_reproducible_from_its_seed(tmp_path, num_workers):
    make_folder(tmp_path, stems=[f"s{i}" for i in range(6)])
    cfg = make_cfg(
        tmp_path,
        num_workers=num_workers,
        batch_size=2,
        crop_size=[4, 4],
        scale_range=[0.5, 2.0],
        photometric=0.5,
    )
    runs = [batches(build_dataloader(cfg, "train", train=True, seed=seed)) for seed in (3, 3, 4)]
    assert len(runs[0]) == 3
    assert runs[0][0][0].shape == (2, 3, 4, 4) and runs[0][0][1].shape == (2, 4, 4)
    for (image_a, label_a), (image_b, label_b) in zip(runs[0], runs[1], strict=True):
        assert torch.equal(image_a, image_b) and torch.equal(label_a, label_b)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(runs[0], runs[2], strict=True)), (
        "a different seed should give different batches"
    )


def test_val_loader_in_order_with_val_batch_size(tmp_path):
    make_folder(tmp_path, "val", stems=("a", "b", "c"))
    cfg = make_cfg(tmp_path, val_batch_size=2)
    loader = build_dataloader(cfg, "val", train=False)
    sizes = [labels.shape[0] for _, labels in loader]
    assert sizes == [2, 1]
    first_labels = next(iter(loader))[1]
    dataset = loader.dataset
    assert torch.equal(first_labels[1], dataset[1][1])


def test_train_loader_rejects_batch_larger_than_split(tmp_path):
    make_folder(tmp_path, stems=("a",))
    with pytest.raises(DataError, match=r"1 samples per epoch.*batch_size=4.*data\.repeat"):
        build_dataloader(make_cfg(tmp_path, batch_size=4), "train", train=True)


def test_repeat_lists_each_training_image_k_times_with_fresh_crops(tmp_path):
    make_folder(tmp_path, stems=("a", "b"))
    cfg = make_cfg(tmp_path, repeat=3, batch_size=6, crop_size=[4, 4], scale_range=[1.0, 1.0])
    dataset = build_dataset(cfg, "train", train=True, seed=0)
    assert len(dataset) == 6
    val = build_dataset(cfg, "train", train=False)
    assert len(val) == 2, "validation never repeats"
    # Item i is image i % 2: every 4×4 crop of item 3 is a window of image "b" (unaugmented).
    full_b = val[1][0]
    crops = [dataset[i][0] for i in (1, 3, 5)]
    windows = {
        (y, x) for y in range(3) for x in range(4) for crop in crops
        if torch.equal(crop, full_b[:, y : y + 4, x : x + 4])
    }  # fmt: skip
    assert len(windows) >= 2, "the repeats of an image should be different random crops"
    ((images, labels),) = batches(build_dataloader(cfg, "train", train=True, seed=0))
    assert images.shape == (6, 3, 4, 4) and labels.shape == (6, 4, 4)


def test_percentile_scaling_with_cache_and_repeat_matches_scaling_each_image(tmp_path):
    make_folder(tmp_path, stems=("a", "b", "c"))
    # Training items, but with a crop the size of the image and no flips: the whole image.
    common = dict(scaling="percentile", mean=[0.0] * 3, std=[1.0] * 3, repeat=2)
    common.update(crop_size=[6, 7], scale_range=[1.0, 1.0], hflip=0.0)
    plain = build_dataset(make_cfg(tmp_path, **common), "train", train=False)
    cached = build_dataset(make_cfg(tmp_path, cache=True, **common), "train", train=True)
    assert len(cached) == 6
    for index in (0, 1, 2, 4, 3, 5, 1):  # items 3..5 repeat 0..2; repeated reads use the memo
        image = plain.load(index % 3)[0].astype(np.float64)
        low, high = np.percentile(image.reshape(-1, 3), [1.0, 99.8], axis=0)
        by_hand = ((image - low) / (high - low)).transpose(2, 0, 1)
        np.testing.assert_allclose(cached[index][0].numpy(), by_hand, atol=1e-5)


def test_repeat_below_one_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match="data.repeat"):
        validate(Config(data=make_cfg(tmp_path, repeat=0)))


def test_workers_get_distinct_augmentation_streams(tmp_path):
    for i in range(4):
        write_rgb(tmp_path / "images" / "train" / f"same{i}.png", seed=0)
        write_gray_mask(tmp_path / "masks" / "train" / f"same{i}.png", random_mask(6, 7, [0, 1]))
    cfg = make_cfg(tmp_path, num_workers=2, batch_size=2, crop_size=[4, 4], scale_range=[0.5, 2.0])
    (first_images, _), (second_images, _) = batches(build_dataloader(cfg, "train", True, seed=0))
    assert not torch.equal(first_images, second_images), "workers repeat each other's crops"
