"""The study command's arms (benchmarks/cli/plan_study.py): each is the config it claims."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile

from benchmarks.cli.plan_study import arm_overrides, table
from segls.config import load

CONFIG = "configs/unet_resnet18_scratch_64x64_600.yaml"


def arm(name: str, tree: dict):
    """The default config with the arm's overrides, loaded and checked as training would."""
    overrides = arm_overrides(name, tree)
    return None if overrides is None else load(CONFIG, overrides)


def test_each_arm_is_what_the_study_says():
    cfg = load(CONFIG)
    tree = {"schedule": {"max_iters": cfg.schedule.max_iters},
            "data": {"class_crop": 0.0, "num_classes": cfg.data.num_classes, "hflip": 0.5,
                     "scale_range": [1.0, 1.0]}}  # fmt: skip
    base = arm("base", tree)
    assert base.loss.lovasz_weight == 0 and base.optimizer.ema_decay is None
    assert (base.schedule.power, base.schedule.warmup_iters, base.schedule.cooldown_iters) == (
        1,
        0,
        0,
    )
    assert base.model.kwargs["decoder_channels"] == [256, 128, 64, 32, 16]
    assert (base.data.vflip, base.data.rotate90, base.data.scale_range) == (0, 0, [1.0, 1.0])
    assert base.eval.flip is False and base.data.class_crop == 0
    old = arm("old", tree)
    assert old.loss.lovasz_weight == 1 and old.optimizer.ema_decay == 0.99 and old.eval.flip
    assert old.model.kwargs["decoder_channels"] == [128, 64, 32, 16, 8]
    assert old.schedule.power == 0 and old.schedule.cooldown_iters == cfg.schedule.max_iters // 4
    assert arm("gen", tree) == cfg
    assert arm("noclass", tree) is None  # only where the plan turned class-aware crops on
    tree["data"]["class_crop"] = 0.3333
    assert arm("noclass", tree).data.class_crop == 0
    final = arm("final", tree)
    assert final.schedule.warmup_iters == 0 and final.eval.flip is True
    # The first study's rules whatever the plan holds: no Lovász term, poly decay to 0.
    assert final.loss.lovasz_weight == 0 and final.schedule.power == 1
    assert final.schedule.cooldown_iters == 0
    assert arm("final_noclass", tree).data.class_crop == 0
    assert final.data.scale_range == [1.0, 1.0] and arm("finalscale", tree) is None
    tree["data"]["scale_range"] = [0.5, 2.0]
    rescaled = arm("finalscale", tree)  # keeps the plan's rescaling, else final's rules
    assert rescaled.schedule.warmup_iters == 0 and rescaled.loss.lovasz_weight == 0
    assert not any(o.startswith("data.scale_range") for o in arm_overrides("finalscale", tree))


def test_single_extras_add_one_thing_to_final():
    cfg = load(CONFIG)
    iters = cfg.schedule.max_iters
    tree = {"schedule": {"max_iters": iters},
            "data": {"class_crop": 0.0, "num_classes": cfg.data.num_classes, "hflip": 0.5,
                     "scale_range": [1.0, 1.0]}}  # fmt: skip
    final = arm_overrides("final", tree)
    for name, added in {
        "ema": ["optimizer.ema_decay=0.99"],
        "lovasz": ["loss.lovasz_weight=1"],
        "cooldown": ["schedule.power=0", f"schedule.cooldown_iters={iters // 4}"],
        "half": ["model.kwargs={decoder_channels: [128, 64, 32, 16, 8]}"],
        "lovasz_cooldown": [
            "loss.lovasz_weight=1",
            "schedule.power=0",
            f"schedule.cooldown_iters={iters // 4}",
        ],  # fmt: skip
    }.items():
        assert arm_overrides(name, tree) == final + added, name
    assert arm("half", tree).model.kwargs["decoder_channels"] == [128, 64, 32, 16, 8]
    both = arm("lovasz_cooldown", tree)  # a later override wins over final's
    assert both.loss.lovasz_weight == 1 and both.schedule.power == 0
    assert both.schedule.cooldown_iters == iters // 4
    tree["data"]["num_classes"] = 40  # no decoder stage narrower than the class count
    assert (
        arm_overrides("half", tree)[-1] == "model.kwargs={decoder_channels: [128, 64, 40, 40, 40]}"
    )


def test_scaling_arm_takes_the_other_mode_with_its_mean_and_std():
    tree = {"schedule": {"max_iters": 600},
            "data": {"class_crop": 0.0, "num_classes": 3, "hflip": 0.5, "scale_range": [1.0, 1.0],
                     "root": "data/scratch_assay", "format": "folder",
                     "scaling": "percentile"}}  # fmt: skip
    scaling = arm("scaling", tree)
    assert scaling.data.scaling == "dtype"
    # Independent: the training TIFFs read with tifffile, divided by the uint16 maximum.
    images = sorted(Path("data/scratch_assay/images/train").glob("*.tif"))
    pixels = np.concatenate([tifffile.imread(p).reshape(-1, 2) for p in images]) / 65535.0
    np.testing.assert_allclose(scaling.data.mean, pixels.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scaling.data.std, pixels.std(0), rtol=1e-4, atol=1e-6)


def test_table_gives_mean_and_range_per_arm():
    results = {"set": {"iters": 300, "crop": [64, 64], "class_crop": 0.0,
                       "arms": {"gen": {0: {"mIoU": 0.5}, 1: {"mIoU": 0.7}}}}}  # fmt: skip
    args = argparse.Namespace(arms=["base", "gen"], budget_minutes=2.0, seeds=[0, 1],
                              flip_arms=["gen"])  # fmt: skip
    row = table(results, args).splitlines()[-1]
    assert row == "| set | 300 | 64x64 | 0.0 | - | 60.0 (50.0-70.0) | - |"
