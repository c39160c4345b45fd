"""Class-aware crops (``data.class_crop``) and the planner's rule and notes about them.

Expected shares are worked by hand from the masks the tests draw.
"""

from __future__ import annotations

import dataclasses
import itertools

import albumentations as A
import numpy as np
import pytest
from helpers import write_images

from segls.config import DataConfig
from segls.data.fingerprint import fingerprint
from segls.data.inventory import survey
from segls.data.transforms import ClassCrop, _window_start, build_geometry, build_transform
from segls.plan import crops


def test_window_start_holds_the_position_and_reaches_every_window():
    for size, window in itertools.product(range(1, 12), range(1, 12)):
        if window > size:
            continue
        for position in range(size):
            starts = {_window_start(position, window, size, draw / 64) for draw in range(64)}
            # every start whose window fits in [0, size) and holds the position, and no other
            expected = {s for s in range(size - window + 1) if s <= position < s + window}
            assert starts == expected, (size, window, position)


def corner_mask() -> np.ndarray:
    """200x300: class 0, a 3x5 patch of class 2 in the top-right corner, a band of ignore."""
    mask = np.zeros((200, 300), np.uint8)
    mask[5:8, 290:295] = 2
    mask[100:110, :] = 255
    return mask


def draw(transform: A.Compose, mask: np.ndarray, count: int) -> list[np.ndarray]:
    """`count` cropped masks."""
    image = np.zeros((*mask.shape, 1), np.uint8)
    return [transform(image=image, mask=mask)["mask"] for _ in range(count)]


def test_class_crop_holds_the_chosen_class():
    mask = corner_mask()
    transform = A.Compose([ClassCrop(64, 64, 1.0, 255)])
    transform.set_random_seed(0)
    crops_drawn = draw(transform, mask, 400)
    assert all(crop.shape == (64, 64) for crop in crops_drawn)
    # Classes present (ignore aside): 0 and 2, each chosen half the time; a crop placed around
    # a class-2 pixel holds it, and one placed around a class-0 pixel rarely reaches the corner.
    share = np.mean([(crop == 2).any() for crop in crops_drawn])
    assert 0.42 <= share <= 0.62
    only = np.full((90, 80), 255, np.uint8)
    only[20, 70] = 1
    assert all((crop == 1).any() for crop in draw(transform, only, 50))
    # Plain random crops hold the 15-pixel corner patch in about (3 + 63)(5 + 63) / (137 x 237)
    # of the windows' positions at most; far fewer than half.
    plain = A.Compose([A.RandomCrop(64, 64)])
    plain.set_random_seed(0)
    assert np.mean([(crop == 2).any() for crop in draw(plain, mask, 400)]) < 0.2


def test_class_crop_repeats_with_the_seed_and_falls_back_on_an_ignored_mask():
    mask = corner_mask()
    first, second = (A.Compose([ClassCrop(32, 48, 0.5, 255)]) for _ in range(2))
    first.set_random_seed(7)
    second.set_random_seed(7)
    for a, b in zip(draw(first, mask, 30), draw(second, mask, 30), strict=True):
        np.testing.assert_array_equal(a, b)
    ignored = np.full((40, 40), 255, np.uint8)
    transform = A.Compose([ClassCrop(16, 16, 1.0, 255)])
    assert all(crop.shape == (16, 16) for crop in draw(transform, ignored, 5))


def test_the_training_transform_uses_it_for_wide_labels_too():
    cfg = DataConfig(crop_size=[32, 32], scale_range=[1.0, 1.0], class_crop=1.0, in_channels=1,
                     mean=[0.5], std=[0.25], ignore_index=65535, num_classes=300)  # fmt: skip
    assert isinstance(build_geometry(cfg).transforms[-2], ClassCrop)
    assert not isinstance(build_geometry(dataclasses.replace(cfg, class_crop=0.0)).transforms[1],
                          ClassCrop)  # fmt: skip
    label = np.zeros((100, 120), np.int32)
    label[90:92, 3:5] = 299
    label[:10] = 65535
    transform = build_transform(cfg, train=True, seed=0)
    image = np.zeros((100, 120, 1), np.uint8)
    held = [(transform(image, label)[1] == 299).any().item() for _ in range(40)]
    assert 10 <= sum(held) <= 30  # classes 0 and 299 present: about half hold 299


def blob_set(root, count: int, side: int, rare_images: int | None = None) -> None:
    """`count` training images with a 4x4 patch of class 1 in a corner; 2 validation images.

    With `rare_images`, only that many training images hold the patch.
    """
    masks = []
    for index in range(count):
        mask = np.zeros((side, side), np.uint8)
        if rare_images is None or index < rare_images:
            mask[2:6, 2:6] = 1
        masks.append(mask)
    images = [np.full((side, side), 10 * (index % 5), np.uint8) for index in range(count)]
    write_images(root, "train", images, masks)
    val_masks = [np.zeros((side, side), np.uint8) for _ in range(2)]
    val_masks[0][2:6, 2:6] = 1
    write_images(root, "val", images[:2], val_masks)


def planned_data(root, crop: int) -> tuple[DataConfig, object]:
    """The data config a plan would make at `crop` (no rescaling), and the fingerprint."""
    fp = fingerprint(survey(root), [1.0, 99.8])
    data = DataConfig(root=str(root), num_classes=2, in_channels=1, crop_size=[crop, crop],
                      scale_range=[1.0, 1.0], mean=[0.1], std=[0.1])  # fmt: skip
    return data, fp


def test_rule_turns_class_crops_on_for_small_objects(tmp_path):
    blob_set(tmp_path, 8, 256)
    data, fp = planned_data(tmp_path, 64)
    choice, presence = crops.class_crop(data, fp)
    # A random 64x64 window of 256x256 (193 positions per axis) holds the patch at rows/cols
    # 2..5 when it starts at 0..5: 6 x 6 / 193^2 = 0.1 % of crops.
    assert presence.plain[1] == pytest.approx(36 / 193**2, abs=0.01)
    assert choice.value == pytest.approx(1 / 3, abs=1e-3)
    # With class-aware crops a third of the crops pick a class among {0, 1}: about 1/6 hold 1.
    assert 0.12 <= presence.planned[1] <= 0.22
    assert "nnU-Net" in choice.why
    assert presence.planned[0] == 1.0


def test_rule_leaves_it_off_when_the_class_is_in_few_images_and_names_it(tmp_path):
    blob_set(tmp_path, 40, 64, rare_images=1)
    data, fp = planned_data(tmp_path, 64)
    choice, presence = crops.class_crop(data, fp)
    # The whole image is the crop: the patch is in 1 of 40 crops (2.5 %), and class-aware crops
    # cannot raise that: a crop of the whole image holds it whatever its centre.
    assert presence.plain[1] == pytest.approx(1 / 40, abs=0.005)
    assert choice.value == 0.0 and "few images" in choice.why
    notes = crops.presence_notes(fp, presence)
    # 1024 crops drawn from the 40 masks in turn: 26 of them from the one holding class 1
    assert any("class 1 'class_1' is in 3% of the planned crops" in note for note in notes), notes


def test_notes_name_a_class_absent_from_validation(tmp_path):
    blob_set(tmp_path, 8, 64)
    for path in (tmp_path / "masks" / "val").glob("*.png"):
        from PIL import Image

        Image.fromarray(np.zeros((64, 64), np.uint8)).save(path)
    data, fp = planned_data(tmp_path, 64)
    _, presence = crops.class_crop(data, fp)
    notes = crops.presence_notes(fp, presence)
    assert any("absent from the validation split" in note and "class 1" in note for note in notes)
