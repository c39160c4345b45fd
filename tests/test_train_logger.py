"""Tests of the run records: log file, metrics.jsonl, TensorBoard (tags, layout, HParams)."""

from __future__ import annotations

import io
import json
import math
import re

import pytest
import torch
import yaml
from helpers import CLASS_NAMES, tiny_config, write_dataset
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar.layout_pb2 import Layout
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from segls.config import to_dict
from segls.io import json_safe
from segls.train import train
from segls.train.logger import HPARAM_METRICS, RunLogger, format_duration


def scores(miou: float) -> dict:
    nan = math.nan
    return {
        "loss": 0.5,
        "aAcc": 0.9,
        "mIoU": miou,
        "mAcc": 0.7,
        "mDice": 0.6,
        "IoU": [miou, nan],
        "Acc": [0.7, nan],
        "Dice": [0.6, nan],
    }


def test_format_duration_and_json_safe():
    assert format_duration(3725.4) == "1:02:05"
    assert format_duration(-3) == "0:00:00"
    assert json_safe({"a": [1.0, math.nan], "b": (math.inf,)}) == {"a": [1.0, None], "b": [None]}


def test_records_and_resume_trimming(tmp_path, capsys):
    logger = RunLogger(tmp_path)
    logger.info("hello\nworld")
    for step in (2, 4, 6):
        logger.scalars({"train/loss": 1.0 / step, "train/skip": math.nan}, step)
        logger.evaluation(step, scores(step / 10), ["bg", "fg"])
    logger.image("val/sample_0", torch.zeros(4, 6, 3, dtype=torch.uint8), 6)
    logger.close()
    assert "hello\nworld" in capsys.readouterr().out
    log_lines = (tmp_path / "train.log").read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in log_lines] == ["hello", "world"]

    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["iter"] for row in rows] == [2, 4, 6]
    assert rows[0]["IoU"] == [0.2, None] and rows[0]["class_names"] == ["bg", "fg"]

    # A run resumed from iteration 4 drops what the first run recorded after it.
    logger = RunLogger(tmp_path, start_iter=4)
    logger.scalars({"train/loss": 0.5}, 5)
    logger.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["iter"] for row in rows] == [2, 4]
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [
        (2, 0.5),
        (4, 0.25),
        (5, 0.5),
    ]
    assert "train/skip" not in events.Tags()["scalars"]
    assert [e.step for e in events.Scalars("val/IoU/bg")] == [2, 4]
    assert "val/IoU/fg" not in events.Tags()["scalars"]  # NaN scores are left out


def test_a_fresh_run_in_a_used_directory_starts_clean(tmp_path):
    logger = RunLogger(tmp_path)
    logger.evaluation(2, scores(0.3), ["bg", "fg"])
    logger.close()
    RunLogger(tmp_path).close()
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_a_run_shows_its_config_layout_hparams_and_panels_in_tensorboard(tmp_path):
    """Read what TensorBoard would show through its own event API."""
    cfg = tiny_config(write_dataset(tmp_path / "data"), schedule={"max_iters": 2})
    cfg.name = "tiny"
    train(cfg, tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"tensors": 0, "images": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    # what README.md's Training section lists (on the CPU in float32: no grad scale, no GPU memory)
    listed = {"train/loss", "train/lr", "train/images_per_s", "train/skipped_steps"}
    listed |= {f"val/{key}" for key in ("loss", "mIoU", "mAcc", "aAcc", "mDice", "ECE", "NLL")}
    listed |= {"val/Brier", *(f"val/IoU/{name}" for name in CLASS_NAMES)}
    assert listed <= scalars, sorted(listed - scalars)
    assert set(events.Tags()["images"]) == {"val/reliability", "val/sample_0", "val/sample_1"}

    text = events.Tensors("config/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert text.startswith("```yaml\n") and text.endswith("```")
    assert yaml.safe_load(text.removeprefix("```yaml\n").removesuffix("```")) == to_dict(cfg)

    layout = Layout.FromString(
        events.Tensors("custom_scalars__config__")[-1].tensor_proto.string_val[0]
    )
    charts = {chart.title: chart.multiline.tag for cat in layout.category for chart in cat.chart}
    shown = {title: {t for t in scalars if any(re.search(r, t) for r in regexes)}
             for title, regexes in charts.items()}  # fmt: skip
    iou = {"val/mIoU", *(f"val/IoU/{name}" for name in CLASS_NAMES)} & scalars
    assert len(iou) >= 3 and shown["val mIoU and per-class IoU"] == iou
    assert shown["loss: train and val"] == {"train/loss", "val/loss"}

    plugin = events.PluginTagToContent("hparams")
    experiment = HParamsPluginData.FromString(plugin["_hparams_/experiment"]).experiment
    start = HParamsPluginData.FromString(plugin["_hparams_/session_start_info"])
    values = start.session_start_info.hparams
    assert values["loss.lb_smooth"].number_value == pytest.approx(0.1)
    assert (
        values["name"].string_value == "tiny"
        and values["data.crop_size"].string_value == "[32, 32]"
    )
    assert values["runtime.seed"].number_value == 0 and "loss.lb_pos" not in values  # unset
    metrics = [info.name.tag for info in experiment.metric_infos]
    assert metrics == list(HPARAM_METRICS) and set(metrics) <= scalars  # values to show
    assert {info.name for info in experiment.hparam_infos} == set(values)

    for index in (0, 1):
        picture = events.Images(f"val/sample_{index}")[-1]
        assert (picture.width, picture.height) == tuple(
            Image.open(io.BytesIO(picture.encoded_image_string)).size
        )
        assert picture.width >= 2 * 160 and picture.height >= 2 * 160  # 2×2 of enlarged tiles
