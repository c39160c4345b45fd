"""Tests of the label-smoothing comparison: grid runs, collection, summary, report, plots."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import tiny_config, write_dataset
from PIL import Image

from segls import config
from segls.cli import compare_smoothing as compare_cli
from segls.predict.plots import line_charts, reliability_diagram, save_png
from segls.train import smoothing


def fake_run(work_dir, epsilon, seed, final, root):
    """A work dir as training leaves it: config.yaml and metrics.jsonl (two evaluations)."""
    cfg = tiny_config(root, loss={"lb_smooth": epsilon}, runtime={"seed": seed})
    work_dir.mkdir(parents=True)
    config.dump(cfg, work_dir / "config.yaml")
    first = {"iter": 2, "mIoU": 0.99, "mAcc": 0.99, "ECE": 0.0, "NLL": 0.0, "Brier": 0.0}
    rows = [first, {"iter": 4, **final}]
    (work_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return work_dir


def test_collect_takes_the_final_evaluation_and_summarise_averages_seeds(tmp_path):
    root = tmp_path / "data"
    scores = lambda miou, ece: {"mIoU": miou, "mAcc": 0.5, "ECE": ece, "NLL": 1.0, "Brier": None}  # noqa: E731
    runs = [
        fake_run(tmp_path / "a", 0.0, 0, scores(0.60, 0.10), root),
        fake_run(tmp_path / "b", 0.0, 1, scores(0.64, 0.20), root),
        fake_run(tmp_path / "c", 0.1, 0, scores(0.70, 0.05), root),
    ]
    records = smoothing.collect(runs)
    assert [(r["epsilon"], r["seed"], r["iter"]) for r in records] == [
        (0, 0, 4),
        (0, 1, 4),
        (0.1, 0, 4),
    ]
    assert records[0]["mIoU"] == 0.60  # the last row, not the best (0.99)
    assert math.isnan(records[0]["Brier"])  # null in metrics.jsonl (undefined) stays NaN
    summary = smoothing.summarise(records)
    assert [row["epsilon"] for row in summary] == [0.0, 0.1]
    assert summary[0]["runs"] == 2
    assert summary[0]["mIoU"] == pytest.approx(0.62)
    assert summary[0]["mIoU_std"] == pytest.approx(0.04 / math.sqrt(2))  # sample std of 2 values
    assert math.isnan(summary[1]["mIoU_std"])  # one run: no spread
    table = smoothing.markdown_table(summary).splitlines()
    assert (
        table[2] == "| 0 | 2 | 62.00 ± 2.83 | 50.00 ± 0.00 | 15.00 ± 7.07 | 1.0000 ± 0.0000 | - |"
    )
    assert table[3] == "| 0.1 | 1 | 70.00 | 50.00 | 5.00 | 1.0000 | - |"


def test_collect_reads_epsilon_from_lb_pos_and_lb_neg(tmp_path):
    run = fake_run(tmp_path / "r", 0.1, 0, {"mIoU": 0.5}, tmp_path / "data")
    cfg = config.load(run / "config.yaml", ["loss.lb_pos=0.9", "loss.lb_neg=0.05"])
    config.dump(cfg, run / "config.yaml")
    # ε is the probability mass moved off the true class: 1 - 0.9, plus lb_neg on it.
    assert smoothing.collect([run])[0]["epsilon"] == pytest.approx(0.15)


def test_collect_names_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a finished segls run"):
        smoothing.collect([tmp_path])


def test_run_grid_trains_each_epsilon_reuses_finished_and_resumes_interrupted(tmp_path):
    root = write_dataset(tmp_path / "data", num_train=2, num_val=1)
    config_path = tmp_path / "tiny.yaml"
    config.dump(tiny_config(root, schedule={"max_iters": 2, "eval_interval": 1}), config_path)
    out = tmp_path / "grid"
    messages = []
    runs = smoothing.run_grid(config_path, [0.0, 0.2], [3], out, log=messages.append)
    assert [run.name for run in runs] == ["eps0_seed3", "eps0.2_seed3"]
    for run, epsilon in zip(runs, [0.0, 0.2], strict=True):
        saved = config.load(run / "config.yaml")
        assert (saved.loss.lb_smooth, saved.runtime.seed) == (epsilon, 3)
    first = smoothing.collect(runs)
    # The runs differ only in ε, so their losses (and hence their weights) differ.
    weights = [torch.load(run / "latest.pth", weights_only=True)["model"] for run in runs]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

    messages.clear()
    smoothing.run_grid(config_path, [0.0, 0.2], [3], out, log=messages.append)
    assert all("reusing" in message for message in messages) and len(messages) == 2
    assert smoothing.collect(runs) == first

    # An interrupted run (its last evaluation missing) continues from latest.pth.
    metrics = runs[1] / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines()[0] + "\n")
    messages.clear()
    smoothing.run_grid(config_path, [0.2], [3], out, log=messages.append)
    assert "training with ε=0.2" in messages[0]
    assert "resumed from" in (runs[1] / "train.log").read_text()


def test_write_report_writes_table_json_plot_and_tensorboard(tmp_path):
    root = tmp_path / "data"
    runs = [
        fake_run(tmp_path / f"r{i}", eps, seed, {"mIoU": m, "mAcc": 0.5, "ECE": e}, root)
        for i, (eps, seed, m, e) in enumerate(
            [(0.0, 0, 0.6, 0.1), (0.0, 1, 0.62, 0.12), (0.2, 0, 0.5, 0.3), (0.2, 1, 0.52, 0.2)]
        )
    ]
    out = tmp_path / "report"
    paths = smoothing.write_report(smoothing.collect(runs), out)
    report = json.loads(paths["json"].read_text())
    assert len(report["runs"]) == 4 and report["summary"][1]["mIoU"] == pytest.approx(0.51)
    assert report["summary"][0]["NLL"] is None  # no NLL recorded: null, not NaN
    assert paths["markdown"].read_text().startswith("| ε | runs |")
    plot = np.asarray(Image.open(paths["plot"]))
    assert plot.shape == (390, 2 * 420, 3)  # two panels: mIoU and ECE
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    assert "smoothing/plot" in events.Tags()["images"]
    assert [(e.step, round(e.value, 6)) for e in events.Scalars("smoothing/mIoU")] == [
        (0, 0.61),
        (200, 0.51),
    ]
    assert not list(out.glob(".*.tmp"))


def test_cli_needs_exactly_one_of_config_and_collect(capsys):
    cli = compare_cli
    with pytest.raises(SystemExit):
        cli.parse_args([])
    assert "give either CONFIG" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.parse_args(["c.yaml", "--eps", "0", "1.5"])
    assert "--eps values must be in [0, 1), got [1.5]" in capsys.readouterr().err
    assert cli.parse_args(["c.yaml", "a.b=1", "--seeds", "0", "1"]).overrides == ["a.b=1"]
    after = cli.parse_args(["c.yaml", "--seeds", "0", "1", "a.b=1", "c.d=[1,2]"])  # as in README
    assert after.seeds == [0, 1] and after.overrides == ["a.b=1", "c.d=[1,2]"]


# ---- plots ---------------------------------------------------------------------------------


def bar_pixel(image, confidence, accuracy):
    """The pixel of the reliability panel at data point (confidence, accuracy)."""
    x = round(70 + confidence * (500 - 70))
    y = round(370 - accuracy * (370 - 40))
    return tuple(image[y, x].tolist())


def test_reliability_diagram_draws_each_bins_accuracy():
    table = {
        "num_bins": 4,
        "count": [0, 10, 5, 1000],
        "confidence": [math.nan, 0.4, 0.7, 0.95],
        "accuracy": [math.nan, 0.2, 0.9, 0.95],
    }
    image = reliability_diagram(table, "t")
    assert image.dtype == torch.uint8 and image.shape[2] == 3
    blue = (70, 120, 190)
    assert bar_pixel(image, 0.375, 0.1) == blue  # bin 1 (0.25-0.5): bar up to 0.2
    assert bar_pixel(image, 0.375, 0.3) != blue
    assert bar_pixel(image, 0.625, 0.85) == blue  # bin 2: up to 0.9
    assert bar_pixel(image, 0.125, 0.05) != blue  # empty bin 0: no bar
    with pytest.raises(ValueError, match="does not hold 5 bins"):
        reliability_diagram({**table, "num_bins": 5})


def test_line_charts_and_save_png(tmp_path):
    image = line_charts([0, 0.1], {"a": {"s": [1.0, math.nan]}, "b": {"s": [2.0, 3.0]}}, "x")
    assert image.shape == (390, 840, 3)
    save_png(image, tmp_path / "p.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "p.png")), image.numpy())
    with pytest.raises(ValueError, match="at least one panel"):
        line_charts([0], {}, "x")
