"""Tests of tools/test.py: scores against a NumPy re-computation, EMA weights, flags, masks."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from helpers import save_checkpoint, tiny_config, write_dataset
from PIL import Image
from torch import nn

from segls import config
from segls.cli import common
from segls.cli import test as test_cli
from segls.models import checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]


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
    scores = test_cli.main([str(config_path), str(checkpoint_path), "--save-masks"])
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
        image = Image.open(out_dir / "masks" / f"s{index}.png")
        assert image.mode == "P"  # the class ids, shown in the dataset's palette
        saved = np.array(image)
        assert saved.dtype == np.uint8 and np.array_equal(saved, prediction)
    assert record["scores"]["calibration"]["num_bins"] == 15
    assert sum(record["scores"]["calibration"]["count"]) == sum(
        int((mask != 255).sum()) for mask in labels
    )
    assert Image.open(out_dir / "reliability.png").size[0] > 0
    printed = capsys.readouterr().out
    assert "ring" in printed and "mIoU" in printed and "ema weights" in printed
    assert "ECE:" in printed and "palette PNGs" in printed
    assert not list(out_dir.rglob("*.tmp"))


def test_flags_are_the_same_as_eval_overrides_and_are_recorded(setup, tmp_path):
    config_path, checkpoint_path, _, _ = setup
    tool = test_cli
    flags = ["--mode", "slide", "--crop", "16", "24", "--stride", "8", "12", "--flip"]
    flags += ["--scales", "0.5", "1", "--amp", "bf16"]
    args = tool.parse_args([str(config_path), str(checkpoint_path), *flags])
    from_flags = config.load(config_path, common.inference_overrides(args))
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
    tool = test_cli
    paths = [str(config_path), str(checkpoint_path)]
    with pytest.raises(
        config.ConfigError, match=r"'eval.stride=\[64,64\]'.*larger than the window"
    ):
        tool.main([*paths, "--mode", "slide", "--stride", "64", "64"])
    with pytest.raises(config.ConfigError, match="fp16 needs a CUDA device.*bf16"):
        tool.main([*paths, "--amp", "fp16"])
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        tool.main([str(config_path), str(checkpoint_path.parent / "nope.pth")])


def write_float_image_with_a_nan_patch(path: Path, like: Path) -> None:
    """A float32 copy of the TIFF `like`, with a 10x10 NaN patch, written to `path`."""
    image = tifffile.imread(like).astype(np.float32)
    image[5:15, 5:15] = np.nan
    tifffile.imwrite(path, image)


def test_a_nan_prediction_is_never_scored_evaluation_stops_naming_the_image(
    setup, tmp_path, capsys
):
    config_path, checkpoint_path, cfg, _ = setup
    bad = Path(cfg.data.root) / "images" / "val" / "s1.tif"
    write_float_image_with_a_nan_patch(bad, bad)
    out = tmp_path / "out"
    argv = [str(config_path), str(checkpoint_path), "--out", str(out), "data.scaling=percentile"]
    assert test_cli.run(argv) == 1
    error = capsys.readouterr().err
    assert error.startswith(
        f"error: the prediction for {bad} holds NaN or inf and was not scored: its pixels hold "
        "NaN or inf after reading and scaling"
    )
    assert error.count("\n") == 1
    assert not out.exists()  # no scores written
