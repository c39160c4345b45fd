"""segls.plan and tools/new_config.py end to end: from a folder of images and masks to a
config that trains."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from helpers import make_dataset

from segls import config
from segls.cli import new_config, train
from segls.plan import PlanError, resolve_device, timing
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
