"""Tests for the calibration scores against hand-worked values and a NumPy re-implementation."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from segls.metrics import CalibrationMetrics, calibration_from_stats, calibration_stats


def reference_calibration(logits, labels, num_bins, ignore_index=255):
    """ECE/NLL/Brier written from the definitions with NumPy, in float64."""
    logits = np.moveaxis(np.asarray(logits, dtype=np.float64), 1, -1)
    labels = np.asarray(labels)
    valid = labels != ignore_index
    z = logits[valid]  # P×C
    y = labels[valid].astype(np.int64)
    if len(y) == 0:
        return {"ECE": math.nan, "NLL": math.nan, "Brier": math.nan, "count": [0] * num_bins}
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    nll = -np.log(p[np.arange(len(y)), y]).mean()
    one_hot = np.eye(p.shape[1])[y]
    brier = ((p - one_hot) ** 2).sum(axis=1).mean()
    ece, counts = 0.0, []
    for b in range(num_bins):
        low, high = b / num_bins, (b + 1) / num_bins
        in_bin = (confidence > low) & (confidence <= high)
        if b == 0:
            in_bin |= confidence <= low
        counts.append(int(in_bin.sum()))
        if in_bin.any():
            gap = abs(correct[in_bin].mean() - confidence[in_bin].mean())
            ece += in_bin.sum() / len(y) * gap
    return {"ECE": ece, "NLL": nll, "Brier": brier, "count": counts}


def test_hand_worked_two_pixels():
    # Pixel 1: logits (0, 0) -> p = (0.5, 0.5), predicts class 0 (first maximum), label 1:
    #   wrong, conf 0.5 -> bin 0 of 2 (0 < 0.5 <= 0.5); NLL -ln 0.5; Brier 0.25 + 0.25 = 0.5.
    # Pixel 2: logits (ln 3, 0) -> p = (0.75, 0.25), label 0: right, conf 0.75 -> bin 1;
    #   NLL -ln 0.75; Brier 0.0625 + 0.0625 = 0.125.
    # ECE = 1/2 * |0 - 0.5| + 1/2 * |1 - 0.75| = 0.375.
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0]]], dtype=torch.float64)
    labels = torch.tensor([[1, 0]])
    scores = calibration_from_stats(calibration_stats(logits, labels, num_bins=2), num_bins=2)
    assert scores["ECE"] == pytest.approx(0.375, abs=1e-12)
    assert scores["NLL"] == pytest.approx((math.log(2) - math.log(0.75)) / 2, abs=1e-12)
    assert scores["Brier"] == pytest.approx((0.5 + 0.125) / 2, abs=1e-12)
    table = scores["calibration"]
    assert table["count"] == [1, 1]
    assert table["confidence"] == pytest.approx([0.5, 0.75])
    assert table["accuracy"] == pytest.approx([0.0, 1.0])


@pytest.mark.parametrize("num_classes", [2, 5])
def test_uniform_prediction_has_known_nll_and_brier(num_classes):
    # p = 1/C everywhere: NLL = ln C; Brier = C * (1/C)^2 - 2/C + 1 = 1 - 1/C.
    logits = torch.zeros(2, num_classes, 3, 4)
    labels = torch.randint(0, num_classes, (2, 3, 4), generator=torch.Generator().manual_seed(0))
    metrics = CalibrationMetrics(num_bins=10)
    metrics.update(logits, labels)
    scores = metrics.compute()
    assert scores["NLL"] == pytest.approx(math.log(num_classes), rel=1e-6)
    assert scores["Brier"] == pytest.approx(1 - 1 / num_classes, rel=1e-6)


def test_confident_and_right_is_perfectly_calibrated():
    labels = torch.tensor([[0, 1, 2, 1]])
    logits = torch.nn.functional.one_hot(labels, 3).permute(0, 2, 1).double() * 100.0
    metrics = CalibrationMetrics()
    metrics.update(logits, labels)
    scores = metrics.compute()
    assert scores["ECE"] == pytest.approx(0.0, abs=1e-12)
    assert scores["calibration"]["count"][-1] == 4


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("num_bins", [1, 15, 7])
def test_matches_numpy_reference(seed, num_bins):
    generator = torch.Generator().manual_seed(seed)
    num_classes = 2 + seed
    logits = torch.randn(3, num_classes, 11, 13, generator=generator, dtype=torch.float64) * 3
    labels = torch.randint(0, num_classes, (3, 11, 13), generator=generator)
    labels[torch.rand(labels.shape, generator=generator) < 0.2] = 255
    metrics = CalibrationMetrics(num_bins)
    metrics.update(logits[:2], labels[:2])  # two batches add up to the whole
    metrics.update(logits[2:], labels[2:])
    scores = metrics.compute()
    expected = reference_calibration(logits.numpy(), labels.numpy(), num_bins)
    assert scores["calibration"]["count"] == expected["count"]
    for key in ("ECE", "NLL", "Brier"):
        assert scores[key] == pytest.approx(expected[key], rel=1e-10, abs=1e-12), key


def test_float32_and_bfloat16_logits_are_scored_in_float32():
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 4, 16, 16, generator=generator) * 4
    labels = torch.randint(0, 4, (2, 16, 16), generator=generator)
    expected = reference_calibration(logits.double().numpy(), labels.numpy(), 15)
    scores = calibration_from_stats(calibration_stats(logits, labels))
    assert scores["NLL"] == pytest.approx(expected["NLL"], rel=1e-5)
    assert scores["Brier"] == pytest.approx(expected["Brier"], rel=1e-5)
    assert scores["ECE"] == pytest.approx(expected["ECE"], abs=1e-5)
    low = calibration_from_stats(calibration_stats(logits.bfloat16(), labels))
    rounded = reference_calibration(logits.bfloat16().double().numpy(), labels.numpy(), 15)
    assert low["NLL"] == pytest.approx(rounded["NLL"], rel=1e-5)


def test_ignored_pixels_do_not_count_and_all_ignored_is_nan():
    logits = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    labels = torch.full((1, 4, 4), 255)
    metrics = CalibrationMetrics(ignore_index=255)
    metrics.update(logits, labels)
    scores = metrics.compute()
    assert all(math.isnan(scores[key]) for key in ("ECE", "NLL", "Brier"))
    assert scores["calibration"]["count"] == [0] * 15
    assert math.isnan(CalibrationMetrics().compute()["ECE"])  # nothing seen at all
    labels[0, 0, 0] = 2
    metrics.update(logits, labels)
    assert sum(metrics.compute()["calibration"]["count"]) == 1


def test_bad_inputs_name_the_problem():
    logits = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ValueError, match=r"values \[3, 7\] outside \[0, 3\)"):
        calibration_stats(logits, torch.tensor([[[0, 3], [7, 255]]]))
    with pytest.raises(ValueError, match="does not match labels shape"):
        calibration_stats(logits, torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="floating point"):
        calibration_stats(logits.long(), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer class indices"):
        calibration_stats(logits, torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="num_bins must be a positive int, got 0"):
        CalibrationMetrics(num_bins=0)
    with pytest.raises(ValueError, match="do not hold 15 bins"):
        calibration_from_stats(torch.zeros(10))


DIST_SCRIPT = """
import sys
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from segls.metrics import CalibrationMetrics


def worker(rank, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/store", rank=rank, world_size=2)
    data = torch.load(f"{out_dir}/data.pt", weights_only=True)
    metrics = CalibrationMetrics(num_bins=6)
    if rank == 0:  # rank 1 sees nothing and must still join the reduction
        metrics.update(data["logits"], data["labels"])
    summed = metrics.compute(sync=True)
    torch.save({"summed": summed["ECE"], "count": summed["calibration"]["count"],
                "local": metrics.stats}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1],), nprocs=2)
"""


def test_sync_across_two_gloo_processes(tmp_path):
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 5, 5, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 5, 5), generator=generator)
    torch.save({"logits": logits, "labels": labels}, tmp_path / "data.pt")
    script = tmp_path / "dist_calibration.py"
    script.write_text(DIST_SCRIPT)
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    expected = reference_calibration(logits.numpy(), labels.numpy(), 6)
    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert result["summed"] == pytest.approx(expected["ECE"], rel=1e-10)
        assert result["count"] == expected["count"]
    assert float(torch.load(tmp_path / "rank1.pt", weights_only=True)["local"].sum()) == 0.0
