"""Tests of the run records: log file, metrics.jsonl, TensorBoard purging on resume."""

from __future__ import annotations

import json
import math

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from segls.io import json_safe
from segls.train.logger import RunLogger, format_duration


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
