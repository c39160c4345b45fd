"""Section 3: training throughput of a GPU-sized model (`benchmarks.throughput`, bench_train).

U-Net/ResNet-50 at 512×512, batch 16, 19 classes, random input, one fresh model per
variant: fp32, fp32 with the Triton loss, fp16 with the gradient scaler, bf16, bf16 +
channels_last, the same with the Triton loss, and the same compiled. Images/s and peak memory
of each, also as ratios to fp32. In smoke mode: a ~80k-parameter U-Net at 32×32, batch 2.

Budget, 130 s on an H100/H200: a step is ~5 TFLOP (~100 GFLOP forward per 512² image, ×3
with backward, ×16), ~15-25 ms in bf16 at 30-40 % of ~790 TFLOP/s, ~40 ms in fp32 (cuDNN's
TF32 convolutions) and several times that where no tensor core helps; 13 steps, the model's
build and cuDNN's autotuning make ~6 s per eager variant (~36 s for six). Compiling the
model's forward and backward with inductor takes ~60 s on 16 cores; it runs last.
"""

from __future__ import annotations

import math

from benchmarks import throughput
from benchmarks.gpu_check.harness import Context
from segls import config

__all__ = ["BUDGET_REASON", "BUDGET_S", "VARIANTS", "gpu_config", "run"]

BUDGET_S = 130.0
BUDGET_REASON = (
    "six eager variants at ~6 s (build, autotune, 13 steps of ~5 TFLOP), one ~60 s compile"
)
VARIANTS = [
    "fp32", "fp32+triton", "fp16", "bf16", "bf16+channels_last", "bf16+channels_last+triton",
    "bf16+channels_last+compile",
]  # fmt: skip
ITERS, WARMUP = 10, 3


def gpu_config(device: str, smoke: bool) -> config.Config:
    """The benchmarked config: U-Net/ResNet-50, 512×512, batch 16, 19 classes (tiny in smoke)."""
    model = {"arch": "Unet", "encoder": "resnet50", "encoder_weights": None}
    crop, batch = [512, 512], 16
    if smoke:
        model = {"arch": "Unet", "encoder": "tu-test_resnet", "encoder_weights": None}
        model["kwargs"] = {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}
        crop, batch = [32, 32], 2
    data = {"num_classes": 19, "in_channels": 3, "crop_size": crop, "batch_size": batch}
    data |= {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    runtime = {"device": device, "num_threads": 1 if smoke else 0}
    return config.from_dict({"data": data, "model": model, "runtime": runtime})


def run(ctx: Context) -> None:
    """Section 3 (see the module docstring)."""
    cfg = gpu_config(str(ctx.device), ctx.smoke)
    iters, warmup = (1, 1) if ctx.smoke else (ITERS, WARMUP)
    ctx.notes.append(
        f"{cfg.model.arch}/{cfg.model.encoder}, {cfg.data.crop_size[0]}×{cfg.data.crop_size[1]}, "
        f"batch {cfg.data.batch_size}, {cfg.data.num_classes} classes, random input; {iters} "
        f"timed steps after {warmup} warm-up steps (the compile happens in the warm-up); peak "
        "memory is max_memory_allocated on CUDA, the rise of the resident set on the CPU"
    )
    baseline = None
    for spec in VARIANTS:
        if ctx.left() <= 0:
            ctx.row(variant=spec, status="skipped (section budget spent)")
            continue
        (row,) = throughput.benchmark(cfg, [throughput.parse_variant(spec)], iters, warmup)
        fields = {"variant": row["variant"]}
        if row["status"] != "ok":
            ctx.row(**fields, status=row["status"])
            continue
        baseline = baseline or (row if spec == "fp32" else None)
        fields |= {"images/s": row["images_per_s"], "peak MiB": row["peak_mib"]}
        fields |= _ratios(row, baseline)
        fields |= {"warm-up s": row["warmup_seconds"], "loss": row["loss"]}
        status = "ok" if math.isfinite(row["loss"]) else "FAIL: the loss is not finite"
        ctx.row(**fields, status=status)
    measured = [row for row in ctx.rows if row["status"] == "ok"]
    ran = [row for row in ctx.rows if not row["status"].startswith("skipped")]
    ctx.check(
        "every variant that runs here trains with a finite loss",
        f"{len(measured)} of {len(ran)}",
        len(measured) == len(ran),
    )


def _ratios(row: dict, baseline: dict | None) -> dict:
    """Images/s and peak memory as multiples of fp32's."""
    if baseline is None:
        return {"× fp32 speed": None, "× fp32 memory": None}
    memory = None
    if row["peak_mib"] is not None and baseline["peak_mib"]:
        memory = row["peak_mib"] / baseline["peak_mib"]
    return {"× fp32 speed": row["images_per_s"] / baseline["images_per_s"], "× fp32 memory": memory}
