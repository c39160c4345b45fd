"""The planning rules: each on synthetic datasets built to trigger it, values worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import blob_mask, make_dataset, pixels_of, square_dataset, write_images
from PIL import Image

from segls.data.fingerprint import fingerprint
from segls.data.inventory import survey
from segls.plan import recipe, rules
from segls.plan.recipe import MODEL_LADDER, Timing


def plan_of(root):
    """The fingerprint of the folder dataset at `root`."""
    return fingerprint(survey(root), [1.0, 99.8])


def value(choices, key):
    """The value chosen for `key`."""
    return {choice.key: choice.value for choice in choices}[key]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("rgb8", "dtype"), ("u16x2", "percentile"), ("float1", "percentile"), ("float01", "dtype")],
)
def test_scaling_follows_dtype_and_range_used(tmp_path, kind, expected):
    written = make_dataset(tmp_path, kind)
    fp = plan_of(tmp_path)
    choices = rules.scaling(fp)
    assert value(choices, "data.scaling") == expected
    assert value(choices, "data.percentiles") == [1.0, 99.8]
    mean = value(rules.normalisation(fp, expected), "data.mean")
    pixels = pixels_of(written["train"]).astype(np.float64)
    if expected == "dtype":
        reference = pixels.mean(0) / (255.0 if kind == "rgb8" else 1.0)
    else:
        scaled = []
        for _, image, _ in written["train"]:
            flat = image.reshape(-1, image.shape[-1]).astype(np.float64)
            low, high = np.percentile(flat, [1.0, 99.8], axis=0)
            scaled.append((flat - low) / (high - low))
        reference = np.concatenate(scaled).mean(0)
    np.testing.assert_allclose(mean, reference, atol=2e-6)


def test_shrink_crop_keeps_the_aspect_and_the_floor():
    # Worked by hand: from 192x576 (median 210x576) the longer relative side shrinks first;
    # 64x96 = 6144 px is still above 6048, height is at its 64 floor, so width goes to 64.
    assert rules.shrink_crop((192, 576), (210, 576), 6048) == (64, 64)
    assert rules.shrink_crop((512, 512), (512, 512), 65536) == (256, 256)
    assert rules.shrink_crop((32, 32), (40, 56), 10) == (32, 32)


def test_crop_batch_and_repeat_from_dataset_size(tmp_path):
    make_dataset(tmp_path, "rgb8", counts={"train": 3, "val": 1})
    choices = rules.crop_and_batch(plan_of(tmp_path))
    assert value(choices, "data.batch_size") == 8
    assert value(choices, "data.repeat") == math.ceil(8 / 3)
    assert value(choices, "data.crop_size") == [32, 32]  # 40x56 rounded down to 32s


def test_the_five_percent_cap_shrinks_the_crop_of_a_small_dataset(tmp_path):
    # 4 x 512^2 px: a batch of 8 may cover 0.05 x 1048576 / 8 = 6553.6 px. Worked by hand,
    # squares shrink 32 px a side at a time (height first) to 96x96 = 9216, then 64x96 = 6144.
    square_dataset(tmp_path, 4, 512)
    choices = rules.crop_and_batch(plan_of(tmp_path))
    assert value(choices, "data.crop_size") == [64, 96]
    assert value(choices, "data.repeat") == 2


def test_large_data_is_not_cached_and_huge_images_are_evaluated_in_windows(tmp_path):
    square_dataset(tmp_path, 2, 64)
    fp = plan_of(tmp_path)
    assert value(rules.loading(fp), "data.cache") is True
    for record in fp.train.records:  # 2 images of 20000^2 x 1 byte: 0.75 GiB
        record.height = record.width = 20_000
    assert value(rules.loading(fp), "data.cache") is True
    fp.val.records[0].height = fp.val.records[0].width = 17_000  # + 0.27 GiB: 1.01 GiB
    assert value(rules.loading(fp), "data.num_workers") == 4
    choices = rules.evaluation(fp)
    assert value(choices, "eval.mode") == "slide" and value(choices, "eval.crop_size") == [1024] * 2


def test_flips_follow_layout_and_lighting(tmp_path):
    rng = np.random.default_rng(0)
    size = (48, 64)
    masks = [blob_mask(rng, 2, size) for _ in range(8)]
    noise = [rng.integers(0, 255, size, dtype=np.uint8) for _ in range(8)]
    write_images(tmp_path / "sym", "train", noise, masks)
    write_images(tmp_path / "sym", "val", noise[:2], masks[:2])
    choices = rules.flips(plan_of(tmp_path / "sym"))
    assert [value(choices, k) for k in ("data.hflip", "data.vflip", "data.rotate90")] == [0.5] * 3
    assert value(choices, "eval.flip") is True
    top = [np.where(np.arange(size[0])[:, None] < 16, 1, 0).repeat(size[1], 1).astype(np.uint8)] * 8
    write_images(tmp_path / "top", "train", noise, top)
    write_images(tmp_path / "top", "val", noise[:2], top[:2])
    choices = rules.flips(plan_of(tmp_path / "top"))
    assert (value(choices, "data.hflip"), value(choices, "data.vflip")) == (0.5, 0.0)
    assert "centred at 0.17 of the height" in {c.key: c.why for c in choices}["data.vflip"]
    ramp = (np.arange(size[1]) % 16 * 12).astype(np.float64)  # slow rise, sharp fall, along x
    lit = [(ramp[None, :] + rng.normal(0, 4, size)).clip(0, 255).astype(np.uint8) for _ in range(8)]
    write_images(tmp_path / "lit", "train", lit, masks)
    write_images(tmp_path / "lit", "val", lit[:2], masks[:2])
    choices = rules.flips(plan_of(tmp_path / "lit"))
    assert (value(choices, "data.hflip"), value(choices, "data.vflip")) == (0.0, 0.5)
    assert value(choices, "eval.flip") is False and value(choices, "data.rotate90") == 0.0
    assert "lit from one side" in {c.key: c.why for c in choices}["data.hflip"]


def test_augmentation_loading_evaluation_and_classes(tmp_path):
    make_dataset(tmp_path / "rgb", "rgb8")
    make_dataset(tmp_path / "u16", "u16x2", classes_file=False)
    rgb, u16 = plan_of(tmp_path / "rgb"), plan_of(tmp_path / "u16")
    assert value(rules.augmentation(rgb, "dtype"), "data.scale_range") == [1.0, 1.0]
    assert "mmseg's recipe" in rules.augmentation(rgb, "dtype")[0].why
    assert value(rules.augmentation(u16, "percentile"), "data.scale_range") == [1.0, 1.0]
    assert value(rules.loading(rgb), "data.cache") is True
    assert value(rules.evaluation(rgb), "eval.mode") == "whole"
    assert value(rules.channels(u16), "data.in_channels") == 2
    assert value(rules.classes(rgb), "data.num_classes") == 3
    inferred = {c.key: c for c in rules.classes(u16)}
    assert (
        inferred["data.num_classes"].value == 3 and "class_<i>" in inferred["data.class_names"].why
    )


def test_many_classes_widen_the_decoder_and_rare_classes_get_a_note(tmp_path):
    assert recipe.decoder_widths(MODEL_LADDER[0], 3) == [256, 128, 64, 32, 16]
    assert recipe.decoder_widths(MODEL_LADDER[0], 40) == [256, 128, 64, 40, 40]
    assert recipe.decoder_widths(MODEL_LADDER[1], 150) == [256, 128, 64, 64, 64]
    make_dataset(tmp_path, "rgb8", num_classes=40, counts={"train": 12, "val": 2})
    fp = plan_of(tmp_path)
    assert fp.num_classes == 40
    mask_path = tmp_path / "masks" / "train" / "train0.png"
    mask = np.asarray(Image.open(mask_path)).copy()
    mask[mask == 39] = 0
    Image.fromarray(mask).save(mask_path)
    for index in range(1, 12):
        path = tmp_path / "masks" / "train" / f"train{index}.png"
        mask = np.asarray(Image.open(path)).copy()
        mask[mask == 39] = 0
        mask[:2, :2] = 39 if index == 1 else mask[:2, :2]
        Image.fromarray(mask).save(path)
    notes = rules.rare_class_notes(plan_of(tmp_path))
    assert any("class 39 'name39'" in note and "1 of 12 images" in note for note in notes)


TIMING = Timing("cpu", step=0.2, evaluation=1.0, startup=10.0, checkpoint=0.5)


def test_schedule_from_budget_worked_by_hand():
    assert recipe.evaluations(180, TIMING) == 6
    # 180 s - 10 s start-up - 6 x (1 s evaluation + 2 x 0.5 s checkpoints) = 158 s -> 790
    assert recipe.affordable_iterations(180, TIMING) == 790
    choices, warnings = recipe.schedule(180, TIMING)
    assert value(choices, "schedule.max_iters") == 786  # 6 evaluations x 131: the whole budget
    assert value(choices, "schedule.eval_interval") == 131
    assert value(choices, "schedule.warmup_iters") == 0
    # A constant rate, then a linear cool-down over the last quarter: 786 // 4 = 196.
    assert value(choices, "schedule.power") == 0.0
    assert value(choices, "schedule.cooldown_iters") == 196
    assert not warnings
    # A long budget is spent too: no cap on passes over the data.
    # 3600 s - 10 s - 6 x 2 s = 3578 s -> 17890 iterations, 6 x 2981 = 17886
    assert value(recipe.schedule(3600, TIMING)[0], "schedule.max_iters") == 17886
    _, short = recipe.schedule(60, TIMING)
    assert "raise --budget-minutes" in short[0]
    assert recipe.evaluations(180, Timing("cpu", 0.2, 100.0, 10.0)) == 1


def test_model_ladder_upgrade_needs_iterations_and_pixels():
    assert recipe.may_upgrade(2000, 60_000_000)
    assert not recipe.may_upgrade(1999, 60_000_000)
    assert not recipe.may_upgrade(10_000, 1_000_000)
    keys = [choice.key for choice in recipe.model(MODEL_LADDER[2], 5, "why")]
    assert keys == ["model.arch", "model.encoder", "model.encoder_weights", "model.kwargs"]
