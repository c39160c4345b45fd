"""Section 5: host syncs per training iteration, counted by torch (`benchmarks.syncs`).

Three short runs of the default recipe (30 iterations, a log line every 10, evaluation and
checkpoint at the end): fp32 with the torch loss, bf16 + channels_last with the Triton loss,
and fp16 (gradient scaler) with the Triton loss. On CUDA every synchronising call is counted
by ``torch.cuda.set_sync_debug_mode("warn")``; the target is at most one per plain
iteration (no log line, evaluation or checkpoint) once the first two, which also autotune
cuDNN and compile kernels, are done. In smoke mode the CPU spy counts instead, 6 iterations.

Budget, 40 s on an H100/H200: three start-ups (~5 s each: model, autotuning, compiles), 90
launch-bound steps (~1 s) and three small evaluations (~1 s each): ~20 s expected.
"""

from __future__ import annotations

from benchmarks import syncs
from benchmarks.gpu_check.harness import Context
from benchmarks.gpu_check.real_run import recipe

__all__ = ["BUDGET_REASON", "BUDGET_S", "MODES", "WARMUP_ITERS", "run"]

BUDGET_S = 40.0
BUDGET_REASON = "three start-ups at ~5 s, 90 launch-bound steps, three small evaluations: ~20 s"
MODES = {  # name: (runtime.amp, overrides)
    "fp32, torch loss": ("off", ["runtime.channels_last=false", "loss.backend=torch"]),
    "bf16 + channels_last, Triton loss": ("bf16", []),
    "fp16 + scaler, Triton loss": ("fp16", []),
}
WARMUP_ITERS = 2


def _schedule(smoke: bool) -> list[str]:
    iters, log = (6, 3) if smoke else (30, 10)
    return [
        f"schedule.max_iters={iters}", f"schedule.log_interval={log}",
        f"schedule.eval_interval={iters}", f"schedule.checkpoint_interval={iters}",
        "schedule.warmup_iters=5", "schedule.cooldown_iters=0", "runtime.vis_samples=0",
    ]  # fmt: skip


def _count(ctx: Context, name: str, amp: str, overrides: list[str]) -> dict:
    cfg = recipe(ctx, amp, *_schedule(ctx.smoke), *overrides)
    counted = syncs.count_train_syncs(cfg, ctx.work_dir / name.split(",")[0].replace(" ", ""))
    plain = [i for i, kind in counted["kinds"].items() if kind == "plain"]
    after = [i for i in plain if i > WARMUP_ITERS]
    reads = counted["per_iteration"]
    worst_after = max((reads[i]["reads"] for i in after), default=None)
    log_iters = [i for i, kind in counted["kinds"].items() if kind == "log"]
    for site, per_iteration in sorted(counted["sites"].items(), key=lambda item: -item[1]):
        ctx.tables.setdefault("where the plain iterations sync", []).append(
            {"mode": name, "site": site, "calls per plain iteration": per_iteration}
        )
    ok = worst_after is not None and worst_after <= 1
    return {
        "loss backend": cfg.loss.backend,
        "plain iterations": len(plain),
        "max syncs, all plain": max((reads[i]["reads"] for i in plain), default=None),
        f"max syncs, plain after {WARMUP_ITERS}": worst_after,
        "max collectives": max((reads[i]["collectives"] for i in plain), default=None),
        "syncs at a log line": max((reads[i]["reads"] for i in log_iters), default=None),
        "status": "ok" if ok else "FAIL: more than one sync in a plain iteration",
    }


def run(ctx: Context) -> None:
    """Section 5 (see the module docstring)."""
    how = "torch.cuda.set_sync_debug_mode('warn')" if ctx.cuda else "the CPU spy (smoke)"
    ctx.notes.append(f"counted by {how}; target: at most 1 per plain iteration")
    for name, (amp, overrides) in MODES.items():
        if amp == "fp16" and not ctx.cuda:
            ctx.row(mode=name, status="skipped (fp16 needs CUDA)")
            continue
        row = ctx.attempt({"mode": name}, lambda a=amp, o=overrides, n=name: _count(ctx, n, a, o))
        if row["status"] in ("ok",) or row["status"].startswith("FAIL"):
            ctx.check(
                f"{name}: ≤ 1 sync per plain iteration",
                row.get(f"max syncs, plain after {WARMUP_ITERS}"),
                row["status"] == "ok",
            )
