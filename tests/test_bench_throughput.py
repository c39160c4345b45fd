"""Tests of the training-throughput benchmark: variants, random batch, rows, report, CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from benchmarks import report as bench_report
from benchmarks import throughput as bench
from benchmarks.cli import bench_train as bench_train_cli
from segls import config

REPO_ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
# Linux lets a process reset its peak resident set; elsewhere the CPU peak is not measured.
RESETTABLE_PEAK = os.access("/proc/self/clear_refs", os.W_OK)


def tiny_tree() -> dict:
    """A ~80k-parameter Unet on 2-channel 32×32 crops, batch 2, one CPU thread."""
    return {
        "data": {
            "in_channels": 2,
            "mean": [0.0, 0.0],
            "std": [1.0, 1.0],
            "num_classes": 3,
            "crop_size": [32, 32],
            "batch_size": 2,
        },
        "model": {
            "arch": "Unet",
            "encoder": "tu-test_resnet",
            "kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 8]},
        },
        "runtime": {"device": "cpu", "num_threads": 1},
    }


def test_variant_specs_round_trip_and_bad_specs_are_explained():
    for variant in bench.all_variants():
        assert bench.parse_variant(variant.name) == variant
    assert len(set(bench.all_variants())) == 24
    assert bench.parse_variant("cl+BF16+triton") == bench.Variant("bf16", True, False, "triton")
    assert bench.parse_variant("fp32").name == "fp32"
    with pytest.raises(ValueError, match="unknown part 'fp8'"):
        bench.parse_variant("fp8+compile")
    with pytest.raises(ValueError, match="sets amp twice"):
        bench.parse_variant("fp16+bf16")


def test_default_grids_start_with_the_fp32_baseline():
    cuda_grid = bench.default_variants(torch.device("cuda"))
    assert cuda_grid[0] == bench.Variant()
    assert {v.loss_backend for v in cuda_grid} == {"torch", "triton"}
    assert 8 <= len(cuda_grid) <= 10
    cpu_grid = bench.default_variants(CPU)
    assert cpu_grid[0] == bench.Variant()
    assert bench.resolve_variants(None, CPU) == cpu_grid
    assert bench.resolve_variants(["all"], CPU) == bench.all_variants()
    assert bench.resolve_variants(["bf16+cl"], CPU) == [bench.Variant("bf16", True)]


def test_cpu_skips_what_needs_cuda_and_compile_unless_asked():
    assert bench.skip_reason(bench.parse_variant("fp16"), CPU, False) == "needs CUDA"
    assert bench.skip_reason(bench.parse_variant("bf16+triton"), CPU, True) == "needs CUDA"
    assert "pass --compile" in bench.skip_reason(bench.parse_variant("compile"), CPU, False)
    assert bench.skip_reason(bench.parse_variant("compile"), CPU, True) is None
    assert bench.skip_reason(bench.parse_variant("bf16+channels_last"), CPU, False) is None


def test_random_batch_has_the_config_shapes_and_about_five_percent_ignored():
    tree = tiny_tree()
    tree["data"].update(crop_size=[64, 48], batch_size=4)
    cfg = config.from_dict(tree)
    images, labels = bench.random_batch(cfg, CPU, torch.channels_last)
    assert images.shape == (4, 2, 64, 48) and images.dtype == torch.float32
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert labels.shape == (4, 64, 48) and labels.dtype == torch.int64
    ignored = labels == 255
    assert 0.03 < ignored.float().mean() < 0.07
    assert set(labels[~ignored].unique().tolist()) == {0, 1, 2}
    again, _ = bench.random_batch(cfg, CPU)
    assert torch.equal(images, again)


def test_benchmark_measures_cpu_variants_and_marks_the_rest_skipped(tmp_path):
    cfg = config.from_dict(tiny_tree())
    rows = bench.benchmark(cfg, iters=2, warmup=1)
    by_name = {row["variant"]: row for row in rows}
    measured = ["fp32", "fp32+channels_last", "bf16", "bf16+channels_last"]
    for name in measured:
        row = by_name[name]
        assert row["status"] == "ok", row["status"]
        assert row["images_per_s"] > 0 and row["seconds"] > 0
        assert torch.isfinite(torch.tensor(row["loss"]))
        if RESETTABLE_PEAK:  # a training step touches fresh memory: its peak is above 0
            assert 0 < row["peak_mib"] < 1024, row["peak_mib"]
        else:
            assert row["peak_mib"] is None
    assert by_name["fp32"]["speedup"] == 1.0
    assert by_name["fp16"]["status"] == "skipped (needs CUDA)"
    assert by_name["fp32+triton"]["status"] == "skipped (needs CUDA)"
    assert by_name["bf16+channels_last+compile"]["status"].startswith("skipped (")
    assert "images_per_s" not in by_name["fp16"]
    # Same seed, same batch, same maths: the fp32 layouts agree on the loss.
    fp32, fp32_cl = by_name["fp32"]["loss"], by_name["fp32+channels_last"]["loss"]
    assert fp32_cl == pytest.approx(fp32, rel=1e-4)

    env = bench_report.environment(cfg, "tiny.yaml", CPU, iters=2, warmup=1)
    report = bench_report.format_report(env, rows)
    assert "| fp16 | skipped (needs CUDA) |" in report
    assert "| fp32 |" in report and "1.00x" in report
    assert "crop 32x32, batch 2" in report and f"torch {torch.__version__}" in report
    out = tmp_path / "out" / "bench.json"
    bench_report.write_json(out, env, rows)
    assert json.loads(out.read_text())["rows"] == rows


def test_a_failing_variant_is_reported_and_the_others_still_run(monkeypatch):
    cfg = config.from_dict(tiny_tree())
    real_run = bench.run_variant

    def run_or_fail(cfg, variant, *args):
        if variant.amp == "bf16":
            raise RuntimeError("out of memory\nmore detail")
        return real_run(cfg, variant, *args)

    monkeypatch.setattr(bench, "run_variant", run_or_fail)
    rows = bench.benchmark(cfg, [bench.Variant("bf16"), bench.Variant()], iters=1, warmup=0)
    assert rows[0]["status"] == "failed: RuntimeError: out of memory"
    assert rows[1]["status"] == "ok" and rows[1]["speedup"] == 1.0


def test_cli_runs_a_config_file_with_overrides_and_writes_json(tmp_path, capsys):
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(tiny_tree()))
    out = tmp_path / "rows.json"
    argv = [str(config_path), "--iters", "1", "--warmup", "0", "--variants", "fp32", "fp16"]
    rows = bench_train_cli.main([*argv, "data.batch_size=3", "--json", str(out)])
    printed = capsys.readouterr().out
    assert [row["status"] for row in rows] == ["ok", "skipped (needs CUDA)"]
    assert "batch 3" in printed and "| fp32 |" in printed
    saved = json.loads(out.read_text())
    assert saved["environment"]["batch"] == 3
    assert [row["variant"] for row in saved["rows"]] == ["fp32", "fp16"]


def test_fused_variant_trains_a_head_without_upsampling_and_is_skipped_for_unet():
    assert bench.parse_variant("fp32+fused") == bench.Variant(loss_upsample="fused")
    assert bench.parse_variant("fp32+fused").name == "fp32+fused"
    tree = tiny_tree()
    tree["model"] = {"arch": "FPN", "encoder": "tu-test_resnet", "kwargs": {}}
    tree["data"]["crop_size"] = [64, 64]
    variants = [bench.Variant(), bench.Variant(loss_upsample="fused")]
    outside, fused = bench.benchmark(config.from_dict(tree), variants, iters=1, warmup=0)
    assert outside["status"] == fused["status"] == "ok"
    assert fused["loss"] == pytest.approx(outside["loss"], rel=1e-5)  # the same first step
    unet = bench.benchmark(config.from_dict(tiny_tree()), variants[1:], iters=1, warmup=0)
    assert unet[0]["status"] == "skipped (Unet has no head upsampling to fuse)"
