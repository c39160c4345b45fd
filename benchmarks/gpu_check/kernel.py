"""Section 1: the loss's backends on CUDA against ``F.cross_entropy`` in float64, at real sizes.

- Every shape × dtype × layout of the grid, on both backends, loss and gradient.
- The options, at both shapes: class weights, mostly ignored labels (one image all ignored),
  lb_pos/lb_neg, ``check_labels=False`` and ``inplace=True`` (Triton only).
- Labels out of range, in a child process (`benchmarks.gpu_check.bad_labels`), so that a
  device-side assert could not poison this process: a clear ValueError, never an assert.
- A tensor of more than 2³¹ elements, which takes the kernel's 64-bit index path.

In smoke mode (no CUDA) the same cases run with tiny shapes; the Triton rows run when
``TRITON_INTERPRET=1`` was set before triton was imported (its interpreter, on the CPU), and
the 64-bit path is then forced on a tiny tensor.

Budget, 75 s on an H100/H200: the data is small for the device, ~1 TB moved in all (each
check is a few passes over ≤ 5 GB at ~4 TB/s, ~0.3 s in total); the time is Triton's
compiles, one per dtype × layout × option specialisation, ~20 at ~1.5 s, the reference's
per-image Python loop, ~5 s, and the child process for bad labels, ~10 s (start-up, CUDA
context, two compiles): ~45 s expected.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os

import torch

from benchmarks.gpu_check import bad_labels
from benchmarks.gpu_check.harness import Context
from benchmarks.gpu_check.reference import LossCase, check_backend
from benchmarks.reference import IGNORE, make_inputs

__all__ = ["BIG_SHAPE", "BUDGET_REASON", "BUDGET_S", "SHAPES", "run", "triton_runs_here"]

BUDGET_S = 75.0
BUDGET_REASON = "~20 Triton compiles at ~1.5 s, the bad-label child ~10 s, ~1 TB moved: ~45 s"
SHAPES = [(8, 19, 1024, 2048), (16, 150, 512, 512)]
SMOKE_SHAPES = [(2, 19, 8, 16), (2, 150, 4, 4)]
BIG_SHAPE = (1, 19, 11000, 11000)  # 2.30e9 elements > 2**31
SMOKE_BIG_SHAPE = (1, 19, 4, 8)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LAYOUTS = ("contiguous", "channels_last", "strided")
FEATURES = {
    "weights": LossCase(weighted=True),
    "mostly ignored": LossCase(),
    "lb_pos/lb_neg": LossCase(lb=(0.8, 0.05)),
    "check_labels=False": LossCase(check_labels=False),
    "inplace": LossCase(inplace=True),
}
FEATURE_SETTINGS = [(1, "float32", "contiguous"), (0, "bfloat16", "channels_last")]


def triton_runs_here(device: torch.device) -> bool:
    """Whether the Triton backend can run: CUDA with triton, or triton's CPU interpreter."""
    if importlib.util.find_spec("triton") is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def _shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape))


def _backends(ctx: Context, inplace: bool = False) -> list[tuple[str, str | None]]:
    """(backend, why it is skipped or None) for a check."""
    triton = None if triton_runs_here(ctx.device) else "skipped (no CUDA; TRITON_INTERPRET=1)"
    return [("triton", triton)] + ([] if inplace else [("torch", None)])


def _check_rows(ctx: Context, fields: dict, values, labels, layout: str, case: LossCase) -> None:
    """One row per backend for these inputs."""
    for backend, skipped in _backends(ctx, case.inplace):
        row = {**fields, "backend": backend}
        if skipped:
            ctx.row(**row, status=skipped)
            continue
        ctx.attempt(row, lambda b=backend: check_backend(values, labels, b, layout, case))


def _grid(ctx: Context, shapes: list[tuple[int, ...]]) -> None:
    """Every shape × dtype × layout, ε = 0.1 with the label check on."""
    for shape in shapes:
        for dtype_name, dtype in DTYPES.items():
            if ctx.left() <= 0:
                ctx.row(case="grid", shape=_shape_text(shape), dtype=dtype_name,
                        status="skipped (section budget spent)")  # fmt: skip
                continue
            values, labels = make_inputs(shape, dtype, ctx.device, seed=len(ctx.rows))
            for layout in LAYOUTS:
                fields = {"case": "grid", "shape": _shape_text(shape), "dtype": dtype_name}
                fields |= {"layout": layout, "options": LossCase().describe()}
                _check_rows(ctx, fields, values, labels, layout, LossCase())
            del values, labels


def _features(ctx: Context, shapes: list[tuple[int, ...]]) -> None:
    """Each option at both shapes (one in float32 contiguous, one in bfloat16 channels_last)."""
    for shape_index, dtype_name, layout in FEATURE_SETTINGS:
        shape = shapes[shape_index]
        values, labels = make_inputs(shape, DTYPES[dtype_name], ctx.device, seed=7)
        for name, case in FEATURES.items():
            mostly = name == "mostly ignored"
            case_labels = _mostly_ignored(labels, ctx.device) if mostly else labels
            fields = {"case": name, "shape": _shape_text(shape), "dtype": dtype_name}
            fields |= {"layout": layout, "options": case.describe()}
            _check_rows(ctx, fields, values, case_labels, layout, case)
        del values, labels


def _mostly_ignored(labels: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`labels` with 60 % of the pixels ignored, and every pixel of the first image."""
    generator = torch.Generator(device=device).manual_seed(8)
    ignored = torch.rand(labels.shape, generator=generator, device=device) < 0.6
    ignored[0] = True
    return torch.where(ignored, IGNORE, labels)


@contextlib.contextmanager
def _index64_forced():
    """Make the Triton kernel take its 64-bit index path for any size (smoke mode)."""
    from segls.losses import _triton

    real = _triton.INDEX64_FROM
    _triton.INDEX64_FROM = 0
    try:
        yield
    finally:
        _triton.INDEX64_FROM = real


def _big(ctx: Context) -> None:
    """A bfloat16 tensor of more than 2³¹ elements through the Triton kernel."""
    shape = SMOKE_BIG_SHAPE if ctx.smoke else BIG_SHAPE
    numel = torch.Size(shape).numel()
    fields = {"case": f"{numel / 2**31:.2f} × 2³¹ elements", "shape": _shape_text(shape)}
    fields |= {"dtype": "bfloat16", "layout": "contiguous", "options": LossCase().describe()}
    fields["backend"] = "triton"
    if not triton_runs_here(ctx.device):
        ctx.row(**fields, status="skipped (no CUDA; TRITON_INTERPRET=1)")
        return

    def measure() -> dict:
        values, labels = make_inputs(shape, torch.bfloat16, ctx.device, seed=11)
        forced = _index64_forced() if ctx.smoke else contextlib.nullcontext()
        with forced:
            return check_backend(values, labels, "triton", "contiguous", LossCase())

    ctx.attempt(fields, measure)


def run(ctx: Context) -> None:
    """Section 1 (see the module docstring)."""
    shapes = SMOKE_SHAPES if ctx.smoke else SHAPES
    if ctx.smoke:
        ctx.notes.append("smoke mode: tiny shapes; the 64-bit index path forced on a tiny tensor")
    ctx.notes.append(
        "tolerances of benchmarks/reference.py, as in the tests: loss 2e-5, gradient "
        "GRAD_TOL[dtype] × the largest reference gradient; float16 backward gets 65536 "
        "(GradScaler's initial scale)"
    )
    _grid(ctx, shapes)
    bad_labels.run_in_child(ctx, _backends(ctx))
    _big(ctx)
    _features(ctx, shapes)
