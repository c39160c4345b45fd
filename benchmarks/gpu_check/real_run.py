"""Section 4: the default recipe on the bundled sample, trained on CUDA, then float16 briefly.

``configs/unet_resnet18_scratch_64x64_600.yaml`` with ``runtime.amp=bf16``, channels_last
and the Triton loss for its 600 iterations: the final mIoU must land in the CPU run's band
(≥ 0.69; the CPU gives 0.7004). Then ``runtime.amp=fp16`` for 200 iterations: the scaler's
skipped steps are counted from train.log, and the scores must be finite. In smoke mode: 2
iterations of batch 2 of a tiny U-Net on the CPU (bf16, the Triton loss under
TRITON_INTERPRET=1), no target judged, and no float16 run (the CPU refuses it).

Budget, 60 s on an H100/H200: a step of this small model (U-Net/ResNet-18, batch 8 of
64×64) is bound by launching its ~400 kernels and by the data loader on the host, ~5-10 ms:
~6 s for 600, ~2 s for 200; the seven evaluations (2 images, flipped too) and TensorBoard
panels ~1 s each, start-up (model, cuDNN autotuning, the loss kernel's compile) ~5 s per
run: ~25 s expected.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import segls
from benchmarks.gpu_check.harness import Context
from benchmarks.gpu_check.kernel import triton_runs_here
from segls import config
from segls.train import train

__all__ = ["BUDGET_REASON", "BUDGET_S", "MIN_MIOU", "recipe", "run", "skipped_steps"]

BUDGET_S = 60.0
BUDGET_REASON = "800 launch-bound steps at ~5-10 ms, 10 small evaluations, two start-ups: ~25 s"
REPO_ROOT = Path(segls.__file__).resolve().parents[1]
RECIPE = REPO_ROOT / "configs" / "unet_resnet18_scratch_64x64_600.yaml"
MIN_MIOU = 0.69
SMOKE = [
    "schedule.max_iters=2", "schedule.warmup_iters=1", "schedule.cooldown_iters=1",
    "schedule.log_interval=1", "schedule.eval_interval=2", "schedule.checkpoint_interval=2",
    "data.batch_size=2", "runtime.vis_samples=1", "eval.flip=false",
    "model.encoder=tu-test_resnet", "model.kwargs.encoder_depth=3",
    "model.kwargs.decoder_channels=[16,8,8]",
]  # fmt: skip


def recipe(ctx: Context, amp: str, *overrides: str) -> config.Config:
    """The default recipe on the bundled sample, on `ctx`'s device, with `amp` and the Triton loss."""
    backend = "triton" if triton_runs_here(ctx.device) else "torch"
    base = [
        f"data.root={REPO_ROOT / 'data' / 'scratch_assay'}", f"runtime.device={ctx.device}",
        f"runtime.amp={amp}", "runtime.channels_last=true", f"loss.backend={backend}",
    ]  # fmt: skip
    return config.load(RECIPE, [*base, *(SMOKE if ctx.smoke else []), *overrides])


def skipped_steps(work_dir: Path) -> int:
    """The skipped (non-finite) steps of a run, as its train.log counts them."""
    counts = re.findall(r"step skipped \(\d+ in a row, (\d+) in all", _log(work_dir))
    return int(counts[-1]) if counts else 0


def _log(work_dir: Path) -> str:
    path = work_dir / "train.log"
    return path.read_text(encoding="utf-8") if path.exists() else ""


def _train(ctx: Context, name: str, cfg: config.Config) -> tuple[dict, float, Path]:
    """Train `cfg` into a fresh work dir; (scores, seconds, work dir)."""
    work_dir = ctx.work_dir / name
    start = time.perf_counter()
    scores = train(cfg, work_dir)
    return scores, time.perf_counter() - start, work_dir


def _bf16(ctx: Context) -> dict:
    cfg = recipe(ctx, "bf16")
    scores, seconds, _ = _train(ctx, "bf16", cfg)
    miou = scores["mIoU"]
    fields = {"iterations": cfg.schedule.max_iters, "loss backend": cfg.loss.backend}
    fields |= {"final mIoU": miou, "val loss": scores["loss"], "seconds": seconds}
    if ctx.smoke:
        ctx.check(f"final mIoU ≥ {MIN_MIOU} (bf16)", f"{miou:.4f} (smoke run)", None)
        return fields
    ctx.check(f"final mIoU ≥ {MIN_MIOU} (bf16)", f"{miou:.4f}", miou >= MIN_MIOU)
    return {**fields, "status": "ok" if miou >= MIN_MIOU else f"FAIL: mIoU below {MIN_MIOU}"}


def _fp16(ctx: Context) -> dict:
    cfg = recipe(ctx, "fp16", "schedule.max_iters=200")
    scores, seconds, work_dir = _train(ctx, "fp16", cfg)
    skipped = skipped_steps(work_dir)
    finite = all(math.isfinite(scores[key]) for key in ("mIoU", "loss"))
    scales = re.findall(r"scale (\d+)", _log(work_dir))
    fields = {"iterations": cfg.schedule.max_iters, "loss backend": cfg.loss.backend}
    fields |= {"final mIoU": scores["mIoU"], "val loss": scores["loss"], "seconds": seconds}
    fields |= {"skipped steps": skipped, "final scale": int(scales[-1]) if scales else None}
    ctx.check("fp16: finite scores after 200 iterations", f"mIoU {scores['mIoU']:.4f}", finite)
    return {**fields, "status": "ok" if finite else "FAIL: non-finite scores"}


def run(ctx: Context) -> None:
    """Section 4 (see the module docstring)."""
    ctx.attempt({"run": "bf16 + channels_last"}, lambda: _bf16(ctx))
    if not ctx.cuda:
        ctx.row(run="fp16", status="skipped (fp16 needs CUDA)")
        return
    ctx.attempt({"run": "fp16 + channels_last"}, lambda: _fp16(ctx))
