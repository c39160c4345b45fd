"""Tests of tools/test.py: scores against a NumPy re-computation, EMA weights, flags, masks."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from test_engine import tiny_config, write_dataset
from torch import nn

from segls import config, io
from segls.models import build_model
from segls.train import checkpoint
from segls.train.optim import build_ema, build_optimizer

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_tool(name: str):
    """Import tools/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(
        f"{name}_tool", REPO_ROOT / "tools" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_checkpoint(cfg: config.Config, path: Path, ema: bool = True) -> nn.Module:
    """A training checkpoint of a random-init model; returns the model the tools should use.

    With `ema`, the checkpoint's ``model`` weights are those of the returned model with the
    class-0 bias raised by 1000 (they predict class 0 everywhere), and its ``ema`` weights
    are the returned model's; without, ``model`` holds the returned model's weights.
    """
    torch.manual_seed(0)
    wanted = build_model(cfg.model, cfg.data.in_channels, cfg.data.num_classes).eval()
    trained = copy.deepcopy(wanted)
    averaged = None
    if ema:
        with torch.no_grad():
            trained.segmentation_head[0].bias[0] += 1000.0
        averaged = build_ema(wanted, 0.5)
        averaged.update_parameters(wanted)
    optimizer = build_optimizer(trained, cfg.optimizer)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    state = checkpoint.training_state(
        trained, optimizer, scaler, 0, -math.inf, config.to_dict(cfg), averaged
    )
    io.write_torch(path, state)
    return wanted


def numpy_predictions(model: nn.Module, cfg: config.Config) -> tuple[list, list]:
    """(predicted classes, labels) of the val split: images normalised by hand, one pass each."""
    root = Path(cfg.data.root)
    predictions, labels = [], []
    for image_path in sorted((root / "images" / "val").glob("*.tif")):
        image = tifffile.imread(image_path).astype(np.float64) / 65535.0
        image = (image - np.array(cfg.data.mean)) / np.array(cfg.data.std)
        batch = torch.from_numpy(image.transpose(2, 0, 1)[None]).float()
        with torch.no_grad():
            predictions.append(model(batch)[0].argmax(0).numpy())
        labels.append(np.array(Image.open(root / "masks" / "val" / f"{image_path.stem}.png")))
    return predictions, labels


def numpy_miou(predictions: list, labels: list, num_classes: int = 3) -> float:
    """Mean IoU over the classes present in labels or predictions (label 255 ignored)."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    for prediction, label in zip(predictions, labels, strict=True):
        valid = label != 255
        np.add.at(cm, (label[valid], prediction[valid]), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
    return float(np.nanmean(iou))


@pytest.fixture
def setup(tmp_path):
    """(config path, checkpoint path, Config, the model whose weights the tools must use)."""
    cfg = tiny_config(write_dataset(tmp_path / "data"), runtime={"vis_samples": 0})
    config_path = tmp_path / "tiny.yaml"
    config.dump(cfg, config_path)
    model = save_checkpoint(cfg, tmp_path / "run" / "best.pth")
    return config_path, tmp_path / "run" / "best.pth", cfg, model


def test_scores_and_masks_match_a_numpy_recomputation_with_the_ema_weights(setup, capsys):
    config_path, checkpoint_path, cfg, model = setup
    scores = load_tool("test").main([str(config_path), str(checkpoint_path), "--save-masks"])
    predictions, labels = numpy_predictions(model, cfg)
    expected = numpy_miou(predictions, labels)
    # The checkpoint's non-EMA weights predict class 0 everywhere: a different score.
    biased = copy.deepcopy(model)
    with torch.no_grad():
        biased.segmentation_head[0].bias[0] += 1000.0
    assert numpy_miou(numpy_predictions(biased, cfg)[0], labels) != pytest.approx(expected)

    assert scores["mIoU"] == pytest.approx(expected)
    out_dir = checkpoint_path.parent / "test_best"  # the default --out
    record = json.loads((out_dir / "scores.json").read_text())
    assert record["scores"]["mIoU"] == pytest.approx(expected)
    assert record["weights"] == "ema" and record["num_images"] == 2
    assert record["class_names"] == ["back", "ring", "core"]
    assert set(scores) <= set(record["scores"])
    for index, prediction in enumerate(predictions):
        saved = np.array(Image.open(out_dir / "masks" / f"s{index}.png"))
        assert saved.dtype == np.uint8 and np.array_equal(saved, prediction)
    assert record["scores"]["calibration"]["num_bins"] == 15
    assert sum(record["scores"]["calibration"]["count"]) == sum(
        int((mask != 255).sum()) for mask in labels
    )
    assert Image.open(out_dir / "reliability.png").size[0] > 0
    printed = capsys.readouterr().out
    assert "ring" in printed and "mIoU" in printed and "ema weights" in printed
    assert "ECE:" in printed
    assert not list(out_dir.rglob("*.tmp"))


def test_flags_are_the_same_as_eval_overrides_and_are_recorded(setup, tmp_path):
    config_path, checkpoint_path, _, _ = setup
    tool = load_tool("test")
    flags = ["--mode", "slide", "--crop", "16", "24", "--stride", "8", "12", "--flip"]
    flags += ["--scales", "0.5", "1", "--amp", "bf16"]
    args = tool.parse_args([str(config_path), str(checkpoint_path), *flags])
    from_flags = config.load(config_path, tool.cli.inference_overrides(args))
    overrides = [
        "eval.mode=slide", "eval.crop_size=[16,24]", "eval.stride=[8,12]", "eval.flip=true",
        "eval.scales=[0.5,1.0]", "runtime.amp=bf16",
    ]  # fmt: skip
    assert from_flags == config.load(config_path, overrides)
    # An override right after --scales is not read as a scale.
    args = tool.parse_args([str(config_path), str(checkpoint_path), "--scales", "1", "2", "a.b=3"])
    assert (args.scales, args.overrides) == ([1.0, 2.0], ["a.b=3"])

    tool.main([str(config_path), str(checkpoint_path), "--out", str(tmp_path / "o"), *flags])
    record = json.loads((tmp_path / "o" / "scores.json").read_text())
    assert record["amp"] == "bf16"
    inference = {key: value for key, value in record["inference"].items() if key != "description"}
    assert inference == {
        "mode": "slide", "crop_size": [16, 24], "stride": [8, 12], "flip": True,
        "scales": [0.5, 1.0],
    }  # fmt: skip
    assert 0.0 <= record["scores"]["mIoU"] <= 1.0


def test_bad_flag_values_name_the_key_and_the_flag(setup):
    config_path, checkpoint_path, _, _ = setup
    tool = load_tool("test")
    paths = [str(config_path), str(checkpoint_path)]
    with pytest.raises(
        config.ConfigError, match=r"'eval.stride=\[64,64\]'.*larger than the window"
    ):
        tool.main([*paths, "--mode", "slide", "--stride", "64", "64"])
    with pytest.raises(config.ConfigError, match="fp16 needs a CUDA device.*bf16"):
        tool.main([*paths, "--amp", "fp16"])
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        tool.main([str(config_path), str(checkpoint_path.parent / "nope.pth")])
