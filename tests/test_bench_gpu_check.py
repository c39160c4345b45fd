"""Tests of the GPU check (tools/gpu_check.py): its harness, its reference, and a smoke run.

The smoke run is the command itself, run as it is on a GPU machine but without CUDA, so every
section's code path runs with tiny shapes; with TRITON_INTERPRET=1 the Triton rows run in
Triton's interpreter on the CPU. A GPU machine runs the same code at full size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks.cli import gpu_check as gpu_check_cli
from benchmarks.gpu_check import harness, reference
from benchmarks.reference import make_inputs

REPO_ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def _section(name: str, run, budget_s: float = 10.0) -> harness.Section:
    return harness.Section(name, name.title(), budget_s, "a test budget", run)


def test_a_failing_section_is_recorded_with_its_traceback_and_the_rest_still_run(tmp_path):
    def fails(ctx):
        ctx.row(case="before the failure")
        raise RuntimeError("CUDA error: out of memory")

    def measures(ctx):
        ctx.attempt({"case": "fine"}, lambda: {"value": 1.0})
        ctx.attempt({"case": "broken"}, lambda: 1 / 0)
        ctx.check("value ≥ 1", 1.0, True)

    first = harness.run_section(_section("first", fails), CPU, False, tmp_path, 10.0)
    second = harness.run_section(_section("second", measures), CPU, False, tmp_path, 10.0)
    assert first["status"] == "error" and "out of memory" in first["error"]
    assert "raise RuntimeError" in first["traceback"]
    assert first["rows"] == [{"case": "before the failure", "status": "ok"}]
    statuses = [row["status"] for row in second["rows"]]
    assert statuses == ["ok", "error: ZeroDivisionError: division by zero"]
    assert "1 / 0" in second["rows"][1]["traceback"]
    assert second["status"] == "FAIL"  # a row that errs fails its section


def test_a_section_past_its_budget_skips_rows_and_is_interrupted_after_the_grace(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(harness, "GRACE_S", 0.3)

    def slow(ctx):
        ctx.attempt({"case": "first"}, lambda: time.sleep(0.2))
        ctx.attempt({"case": "after the budget"}, lambda: None)
        time.sleep(5)  # interrupted 0.3 s after the budget

    start = time.monotonic()
    record = harness.run_section(_section("slow", slow, 0.1), CPU, False, tmp_path, 0.1)
    assert time.monotonic() - start < 2
    assert [row["status"] for row in record["rows"]] == ["ok", "skipped (section budget spent)"]
    assert record["status"] == "error" and "SectionTimeout" in record["error"]
    smoke = harness.run_section(_section("slow", slow, 0.1), CPU, True, tmp_path, 0.1)
    assert smoke["status"] == "ok"  # smoke mode times nothing out


def test_the_check_against_the_reference_fails_a_wrong_loss_or_gradient(monkeypatch):
    values, labels = make_inputs((2, 5, 3, 4), torch.float32, CPU)
    case = reference.LossCase(weighted=True)
    assert reference.check_backend(values, labels, "torch", "channels_last", case)["status"] == "ok"
    real = reference.label_smooth_softmax_ce

    def off_by_a_thousandth(logits, labels, **kwargs):
        return real(logits, labels, **kwargs) * 1.001

    monkeypatch.setattr(reference, "label_smooth_softmax_ce", off_by_a_thousandth)
    result = reference.check_backend(values, labels, "torch", "contiguous", case)
    assert result["status"].startswith("FAIL") and result["loss err/tol"] > 1
    assert result["grad err/tol"] > 1  # the gradient is off by the same factor


def test_the_reference_is_f_cross_entropy_for_lb_pos_lb_neg_too():
    values, labels = make_inputs((2, 4, 3, 5), torch.float32, CPU, ignore_fraction=0.3)
    lb_pos, lb_neg = 1 - 0.1 + 0.1 / 4, 0.1 / 4  # the ε = 0.1 targets, written out
    loss = torch.nn.functional.cross_entropy(
        values.double(), labels, ignore_index=255, label_smoothing=0.1
    )
    explicit = reference.compare(
        values, labels, loss, torch.zeros_like(values), reference.LossCase(lb=(lb_pos, lb_neg)), 1.0
    )
    assert explicit["loss"] == pytest.approx(loss.item(), rel=1e-12)


def test_the_command_skips_sections_when_the_time_limit_is_spent(tmp_path, capsys):
    status = gpu_check_cli.main(["--out", str(tmp_path), "--time-limit", "0"])
    report = json.loads((tmp_path / "gpu_report.json").read_text())
    statuses = {section["name"]: section["status"] for section in report["sections"]}
    assert statuses["kernel"] == "skipped (the script's time limit was reached)"
    assert statuses["upsample"] == "skipped (the script's time limit was reached)"
    assert status == 0 and "1. Kernel correctness: skipped" in capsys.readouterr().out


@pytest.mark.slow
def test_the_smoke_run_exercises_every_section_and_writes_the_report(tmp_path):
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "tools/gpu_check.py", "--out", str(tmp_path / "report")]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "gpu_report.json").read_text())
    env_keys = {"device", "torch", "triton", "segmentation-models-pytorch", "date"}
    assert env_keys <= set(report["environment"]) and report["environment"]["mode"].startswith(
        "smoke"
    )
    sections = {section["name"]: section for section in report["sections"]}
    assert [
        sections[n]["status"]
        for n in ("kernel", "loss", "throughput", "real_run", "syncs", "upsample")
    ] == ["ok"] * 6
    kernel_rows = sections["kernel"]["rows"]
    triton_checked = [
        r for r in kernel_rows if r.get("backend") == "triton" and r["status"] == "ok"
    ]
    assert len(triton_checked) >= 18 + 5 + 3  # the grid, the options, bad labels, 2³¹ elements
    assert {r["case"] for r in kernel_rows} >= {"labels -1 and 19", "device usable afterwards"}
    assert [r["status"] for r in sections["real_run"]["rows"]] == [
        "ok",
        "skipped (fp16 needs CUDA)",
    ]
    upsample_rows = sections["upsample"]["rows"]
    assert len(upsample_rows) == 2 * 2 * 3  # cases × align_corners × (2 dtypes + speed)
    assert all(r["status"] == "ok" for r in upsample_rows)
    syncs = [r for r in sections["syncs"]["rows"] if r["status"] == "ok"]
    assert len(syncs) == 2 and all(r["max syncs, plain after 2"] == 1 for r in syncs)
    markdown = (tmp_path / "report" / "gpu_report.md").read_text()
    assert "| 1. Kernel correctness | ok |" in markdown and "## 5. Host syncs" in markdown
