"""Section 1's labels out of range, checked in a child process.

A device-side assert leaves the CUDA context unusable for the rest of its process, so these
cases run in a child: if one asserted, the child dies and the parent records that, its own
context untouched. Labels -1 and C must raise the loss's ValueError naming them when
``check_labels`` is on (both backends), and count as ignored without it (Triton; the torch
backend without the check indexes with them, which is why the check exists). Last, the
child checks that its device still works. It prints its rows as JSON on its last line.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import torch

from benchmarks import child_env
from benchmarks.gpu_check.harness import Context
from benchmarks.gpu_check.reference import LossCase, check_backend
from benchmarks.reference import make_inputs
from segls.losses import label_smooth_softmax_ce

__all__ = ["EXPECTED_MESSAGE", "child", "run_in_child"]

SHAPE = (2, 19, 512, 1024)
SMOKE_SHAPE = (2, 19, 4, 8)
EXPECTED_MESSAGE = "labels contain -1, 19 but C = 19"
CHILD_CODE = "from benchmarks.gpu_check import bad_labels; bad_labels.child()"


def _bad_labels(labels: torch.Tensor) -> torch.Tensor:
    """`labels` with -1 in two pixels of the first image and C in two of the last."""
    bad = labels.clone()
    bad[0, 0, :2] = -1
    bad[-1, -1, -2:] = 19
    return bad


def _raises(values, labels, backend: str) -> dict:
    """Whether the checked loss raises the ValueError naming the bad labels."""
    try:
        label_smooth_softmax_ce(values.clone().requires_grad_(), labels, 0.1, backend=backend)
    except ValueError as error:
        found = EXPECTED_MESSAGE in str(error)
        return {"raised": str(error)[:80], "status": "ok" if found else "FAIL: another message"}
    return {"raised": None, "status": "FAIL: no error for labels -1 and 19"}


def _device_works(device: torch.device) -> dict:
    """Whether the device still computes after the cases (no sticky device-side assert)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    total = (torch.ones(4, device=device) * 2).sum().item()
    return {"status": "ok" if total == 8 else f"FAIL: 2 × ones(4) summed to {total}"}


def child() -> None:
    """The child's body: the spec is argv[1] as JSON; prints the rows as JSON."""
    spec = json.loads(sys.argv[1])
    device, shape = torch.device(spec["device"]), SMOKE_SHAPE if spec["smoke"] else SHAPE
    values, labels = make_inputs(shape, torch.float32, device, seed=3)
    labels = _bad_labels(labels)
    base = {"case": "labels -1 and 19", "shape": "×".join(map(str, shape)), "dtype": "float32"}
    base["layout"] = "contiguous"
    rows = []
    for backend, skipped in spec["backends"]:
        row = {**base, "backend": backend, "options": "check_labels"}
        rows.append(
            {**row, "status": skipped} if skipped else {**row, **_raises(values, labels, backend)}
        )
        if backend == "triton":
            case = LossCase(check_labels=False)
            row = {**base, "backend": backend, "options": case.describe()}
            result = (
                {"status": skipped}
                if skipped
                else check_backend(values, labels, backend, "contiguous", case)
            )
            rows.append({**row, **result})
    rows.append(
        {**base, "case": "device usable afterwards", "backend": "-", **_device_works(device)}
    )
    print(json.dumps(rows))


def run_in_child(ctx: Context, backends: list[tuple[str, str | None]]) -> None:
    """Run `child` in a new process and add its rows (or why it gave none) to `ctx`."""
    if ctx.left() <= 0:
        ctx.row(case="labels -1 and 19", status="skipped (section budget spent)")
        return
    spec = {"device": str(ctx.device), "smoke": ctx.smoke, "backends": backends}
    env = child_env()
    command = [sys.executable, "-c", CHILD_CODE, json.dumps(spec)]
    timeout = None if math.isinf(ctx.left()) else max(30.0, ctx.left())
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        ctx.row(case="labels -1 and 19", status="FAIL: the child process timed out")
        return
    lines = done.stdout.strip().splitlines()
    try:
        rows = json.loads(lines[-1]) if done.returncode == 0 and lines else None
    except json.JSONDecodeError:
        rows = None
    if rows is None:
        tail = " / ".join(done.stderr.strip().splitlines()[-3:])[-300:]
        ctx.row(
            case="labels -1 and 19", status=f"FAIL: the child exited with {done.returncode}: {tail}"
        )
        return
    ctx.rows.extend(rows)
