"""The GPU check behind tools/gpu_check.py: everything a first CUDA device must show, in one run.

Six sections, each with its own time budget (each module says how its budget was chosen
from the work it does on an H100/H200: bytes at ~4 TB/s, FLOPs at ~790 TFLOP/s in bf16,
compile times), run one after the other by `harness.run_section`; a section that fails is
recorded with its traceback and the next one runs. `report` writes gpu_report.md/.json.

1. `kernel`: the loss's backends against F.cross_entropy in float64 at real sizes.
2. `loss`: the loss benchmark and the kernel's targets.
3. `training`: training throughput of U-Net/ResNet-50 at 512×512 per speed switch.
4. `real_run`: the default recipe on the bundled sample, bf16 and fp16.
5. `host_syncs`: host syncs per training iteration.
6. `upsample`: the loss with bilinear upsampling fused in, against interpolating first.

Without CUDA every section runs in smoke mode (tiny shapes, GPU-only rows skipped), which
tests/test_bench_gpu_check.py runs so the script cannot rot.
"""

from __future__ import annotations

from benchmarks.gpu_check import host_syncs, kernel, loss, real_run, training, upsample
from benchmarks.gpu_check.harness import Section

__all__ = ["SECTIONS", "TOTAL_BUDGET_S"]

TOTAL_BUDGET_S = 420.0  # 7 minutes: the whole check, report included
SECTIONS = [
    Section("kernel", "1. Kernel correctness", kernel.BUDGET_S, kernel.BUDGET_REASON, kernel.run),
    Section("loss", "2. Loss benchmark", loss.BUDGET_S, loss.BUDGET_REASON, loss.run),
    Section(
        "throughput",
        "3. Training throughput",
        training.BUDGET_S,
        training.BUDGET_REASON,
        training.run,
    ),  # fmt: skip
    Section(
        "real_run",
        "4. The default recipe on CUDA",
        real_run.BUDGET_S,
        real_run.BUDGET_REASON,
        real_run.run,
    ),  # fmt: skip
    Section(
        "syncs",
        "5. Host syncs per training step",
        host_syncs.BUDGET_S,
        host_syncs.BUDGET_REASON,
        host_syncs.run,
    ),  # fmt: skip
    Section(
        "upsample",
        "6. Fused-upsampling loss",
        upsample.BUDGET_S,
        upsample.BUDGET_REASON,
        upsample.run,
    ),  # fmt: skip
]
