"""segls.plan and tools/new_config.py end to end: from a folder of images and masks to a
config that trains."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from helpers import make_dataset, square_dataset
from PIL import Image

from segls import config
from segls.cli import new_config, train
from segls.plan import PlanError, plan_dataset, recipe, resolve_device, timing
from segls.plan.config_file import apply_choices, write_config
from segls.plan.recipe import Timing
from segls.plan.rules import Choice


@pytest.fixture
def quick_timing(monkeypatch):
    """One warm-up and one timed step per probe: the test checks the plumbing, not the speed."""
    monkeypatch.setattr(timing, "WARMUP_STEPS", 1)
    monkeypatch.setattr(timing, "TIMED_STEPS", 1)
    monkeypatch.setattr(timing, "TIMED_SECONDS", 0.0)


def test_generated_config_trains_at_once(tmp_path, quick_timing, capsys):
    make_dataset(tmp_path / "data", "rgb8", counts={"train": 10})  # no val split
    out = tmp_path / "configs" / "mine.yaml"
    argv = [str(tmp_path / "data"), "--out", str(out), "--budget-minutes", "0.5", "--device", "cpu"]
    assert new_config.main(argv) == 0
    printed = capsys.readouterr().out
    assert "no_val_split" in printed and f"python tools/train.py {out}" in printed
    for name in ("mine.yaml", "mine.md", "mine.classes.png", "mine.intensity.png"):
        assert (out.parent / name).stat().st_size > 0
    assert (tmp_path / "data" / "auto_val.txt").read_text().count("\n") == 2
    fingerprint_json = json.loads((out.parent / "mine.fingerprint.json").read_text())
    assert fingerprint_json["splits"]["auto_train"]["images"] == 8
    text = out.read_text()
    assert "# Generated on" in text and 'scaling: "dtype"' in text
    assert "default" in text and "the 99.8th percentile reaches" in text
    report = (out.parent / "mine.md").read_text()
    assert "## Choices" in report and "`data.crop_size`" in report and "mine.classes.png" in report
    assert "## Classes in training crops" in report and "| 0 | name0 | 100% |" in report
    assert "1-thread CPU time" in report and "1-thread CPU time" in text
    cfg = config.load(out)
    assert (cfg.data.train_split, cfg.data.val_split) == ("auto_train", "auto_val")
    scores = train.main(
        [str(out), "--work-dir", str(tmp_path / "run"), "schedule.max_iters=2",
         "schedule.eval_interval=2", "schedule.warmup_iters=0", "schedule.cooldown_iters=0"]
    )  # fmt: skip
    assert 0.0 <= scores["mIoU"] <= 1.0


def test_blocking_problems_exit_1_and_cuda_without_cuda_is_a_clear_error(
    tmp_path, monkeypatch, capsys
):
    fixed = Timing("cpu", step=0.1, evaluation=0.1, startup=1.0, checkpoint=0.1)
    monkeypatch.setattr(timing, "measure", lambda *args, **kwargs: fixed)
    make_dataset(tmp_path / "data", "rgb8")
    (tmp_path / "data" / "masks" / "train" / "train0.png").unlink()
    argv = [str(tmp_path / "data"), "--out", str(tmp_path / "c.yaml"), "--budget-minutes", "0.5"]
    assert new_config.main([*argv, "--device", "cpu"]) == 1
    assert "BLOCKING missing_mask" in capsys.readouterr().out
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert new_config.run([*argv, "--device", "cuda"]) == 1
    assert "--device cuda: CUDA is not available" in capsys.readouterr().err
    with pytest.raises(PlanError, match="with --device cpu"):
        resolve_device("cuda")


def colour_code_masks(root, palette) -> np.ndarray:
    """Save every mask under `root` as an RGB picture of `palette`; returns the training
    masks' pixels per colour."""
    pixels = np.zeros(len(palette), np.int64)
    for path in sorted((root / "masks").rglob("*.png")):
        ids = np.asarray(Image.open(path)) % len(palette)  # the ignore label 255 becomes an id
        if path.parent.name == "train":
            pixels += np.bincount(ids.ravel(), minlength=len(palette))
        Image.fromarray(np.asarray(palette, np.uint8)[ids]).save(path)
    return pixels


def test_all_colour_masks_or_all_unreadable_images_are_one_error_naming_what_was_found(
    tmp_path, capsys
):
    palette = [(0, 0, 0), (128, 0, 0), (0, 128, 0)]
    make_dataset(tmp_path / "colour", "rgb8", counts={"train": 5, "val": 1}, classes_file=False)
    pixels = colour_code_masks(tmp_path / "colour", palette)
    argv = ["--out", str(tmp_path / "c.yaml"), "--device", "cpu"]
    assert new_config.run([str(tmp_path / "colour"), *argv]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(f"error: {tmp_path / 'colour'}: ")
    assert "all 5 masks have 3 channels" in captured.err and "colour-coded" in captured.err
    for colour, count in zip(palette, pixels, strict=True):
        assert f"{colour} {count} px" in captured.err
    assert not (tmp_path / "c.yaml").exists()

    make_dataset(tmp_path / "broken", "rgb8", counts={"train": 4, "val": 2})
    for path in (tmp_path / "broken" / "images").rglob("*.png"):
        path.write_bytes(b"not a png")
    assert new_config.run([str(tmp_path / "broken"), *argv]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "4 images cannot be read" in captured.err
    assert str(tmp_path / "broken" / "images" / "train" / "train0.png") in captured.err


def probe_times(step_of, monkeypatch) -> list[tuple]:
    """Replace the timing by `step_of(cfg)` seconds per step; returns the probes seen."""
    seen = []

    def measure(cfg, device, fp, limit):
        seen.append((cfg.model.encoder, list(cfg.data.crop_size)))
        return Timing("cpu", step=step_of(cfg), evaluation=0.1, startup=1.0, checkpoint=0.0)

    monkeypatch.setattr(timing, "measure", measure)
    return seen


def test_the_crop_shrinks_to_fit_the_budget_and_the_model_grows_with_it(tmp_path, monkeypatch):
    square_dataset(tmp_path, 40, 256)  # 5 % cap: 0.05 x 40 x 256^2 / 8 = 16384 px, 128x128
    seen = probe_times(lambda cfg: 0.2 * cfg.data.crop_size[0] * cfg.data.crop_size[1] / 4096,
                       monkeypatch)  # fmt: skip
    plan = plan_dataset(tmp_path, budget_minutes=200 / 60, device="cpu")
    # Worked by hand: 200 s - 1 s start-up - 6 x 0.1 s evaluations = 198.4 s. At 128x128 a step
    # takes 0.8 s: 248 iterations, under 500, so the crop area may be 0.9 x 16384 x 248 / 500 =
    # 7314 px: 96x96 = 9216 is too big, 64x96 = 6144 fits, and 0.3 s steps afford 661.
    assert seen == [("resnet18", [128, 128]), ("resnet18", [64, 96])]
    assert plan.config.data.crop_size == [64, 96] and plan.config.model.encoder == "resnet18"
    assert plan.config.schedule.max_iters == 660  # 6 evaluations x 110
    monkeypatch.setattr(recipe, "UPGRADE_PIXELS", 1)
    steps = {(18, 256): 0.02, (34, 256): 0.2}
    seen = probe_times(
        lambda cfg: steps[int(cfg.model.encoder[6:]), cfg.model.kwargs["decoder_channels"][0]],
        monkeypatch,
    )
    plan = plan_dataset(tmp_path, budget_minutes=200 / 60, device="cpu")
    # 0.02 s affords 9920 >= 2000 iterations: try ResNet-34, whose 992 do not.
    assert [encoder for encoder, _ in seen] == ["resnet18", "resnet34"]
    assert plan.config.model.kwargs["decoder_channels"] == [256, 128, 64, 32, 16]
    assert plan.config.model.encoder == "resnet18"


def test_written_config_has_every_key_and_loads_back(tmp_path):
    choices = [
        Choice("data.crop_size", [96, 64], "why the crop"),
        Choice("runtime.amp", "off", "x"),
    ]
    cfg = apply_choices(choices)
    path = tmp_path / "c.yaml"
    write_config(cfg, choices, ["a header"], path)
    assert config.to_dict(config.load(path)) == config.to_dict(cfg)
    tree = yaml.safe_load(path.read_text())
    assert set(tree) == set(config.to_dict(cfg))
    assert all(set(tree[s]) == set(config.to_dict(cfg)[s]) for s in tree)
    text = path.read_text()
    assert "crop_size: [96, 64]  # why the crop" in text and 'amp: "off"' in text
