"""The upsampling benchmark on a tiny case: every variant, the child protocol, the table."""

import json

import pytest
import torch.nn.functional as F

from benchmarks import upsample
from benchmarks.cli import bench_upsample
from benchmarks.reference import IGNORE, make_inputs

SHAPE, SIZE = (2, 3, 4, 5), (8, 10)
SPEC = {"shape": SHAPE, "size": SIZE, "repeats": 1, "device": "cpu", "threads": 1}


def reference_loss(align_corners: bool) -> float:
    """PyTorch's interpolation and cross-entropy on the benchmark's inputs, in float64."""
    logits, labels = make_inputs(SHAPE, ignore_fraction=0.05, label_size=SIZE)
    full = F.interpolate(logits.double(), size=SIZE, mode="bilinear", align_corners=align_corners)
    return F.cross_entropy(full, labels, ignore_index=IGNORE, label_smoothing=0.1).item()


def test_every_variant_is_timed_in_turns_and_agrees_with_pytorch():
    spec = {**SPEC, "kind": "time", "align_corners": False, "names": list(upsample.VARIANTS)}
    results = upsample.run_worker(spec)
    assert [r["name"] for r in results] == list(upsample.VARIANTS)
    assert results[0]["variant"] == "fused (torch backend)"
    expected = reference_loss(False)
    assert [r["loss"] for r in results] == pytest.approx([expected] * 3, rel=1e-5)
    assert all(r["median_ms"] > 0 for r in results)
    memory = upsample.run_worker({**spec, "kind": "memory", "names": ["fused"]})
    assert memory[0]["name"] == "fused" and memory[0]["peak_mib"] >= 0


def test_table_names_the_backend_and_a_failed_variant():
    ok = {"name": upsample.REFERENCE, "variant": upsample.REFERENCE, "median_ms": 2.0}
    ok |= {"peak_mib": 4.0, "loss": 1.5}
    fused = {**ok, "name": "fused", "variant": "fused (torch backend)", "peak_mib": 1.0}
    failed = {"name": "interpolate + segls", "variant": "interpolate + segls"}
    failed["error"] = "benchmarks.cli.bench_upsample --worker failed: MemoryError"
    table = upsample.format_table(SHAPE, SIZE, [fused, ok, failed])
    assert "2×3×4×5 → 8×10 (×2)" in table
    assert "| fused (torch backend) | 2 | 1.00x | 1.0 | 0.250x | 1.500000 |" in table
    assert "| interpolate + segls | failed: benchmarks.cli.bench_upsample" in table


@pytest.mark.slow
def test_the_command_line_runs_each_variant_in_child_processes(tmp_path, capsys):
    out = tmp_path / "upsample.json"
    argv = ["--shape", *map(str, SHAPE), "--size", *map(str, SIZE), "--repeats", "1"]
    argv += ["--variants", "fused", upsample.REFERENCE]
    assert bench_upsample.run([*argv, "--threads", "1", "--align-corners", "--json", str(out)]) == 0
    assert "| fused (torch backend) |" in capsys.readouterr().out
    (case,) = json.loads(out.read_text())
    assert [r["name"] for r in case["results"]] == ["fused", upsample.REFERENCE]
    expected = reference_loss(True)
    assert all(r["loss"] == pytest.approx(expected, rel=1e-5) for r in case["results"])
    assert all(r["peak_mib"] is not None for r in case["results"])
