"""Running the GPU check's sections: budgets, failures kept apart, the report after each one.

A section is a function of a `Context`. It adds rows (one per case it measured or checked,
each with a ``status``: ``ok``, ``FAIL: ...``, ``skipped (...)`` or ``error: ...``) and
target checks, and reads `Context.left` before starting a row, so that a section whose
budget is spent marks the rest of its rows skipped. A section that overruns its budget by
more than `GRACE_S` is interrupted (SIGALRM), and one that raises is recorded with its
traceback; either way the next section runs. The report is rewritten after every section,
so a run cut short still leaves one. Smoke mode times nothing out: it shows that every
code path runs, on whatever CPU, not how fast.
"""

from __future__ import annotations

import math
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["GRACE_S", "Context", "Section", "SectionTimeout", "run_section", "status_of"]

GRACE_S = 20.0  # how long a section may overrun its budget before it is interrupted


class SectionTimeout(Exception):
    """A section ran past its budget plus the grace period."""


@dataclass(frozen=True)
class Section:
    """One part of the check: a title, a time budget (and why that budget), what it runs."""

    name: str
    title: str
    budget_s: float
    budget_reason: str
    run: Callable[[Context], None] | None
    missing: str | None = None  # why the section cannot run on this branch, if it cannot


@dataclass
class Context:
    """What a section sees: where it runs, how small, where to write, and how long it has."""

    device: torch.device
    smoke: bool  # tiny shapes: no CUDA, or asked for
    work_dir: Path  # scratch space (training runs), not the report folder
    deadline: float  # time.monotonic() at which the section's budget is spent
    expired: bool = False  # set when the section overran its budget by GRACE_S
    rows: list[dict] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: dict[str, list[dict]] = field(default_factory=dict)  # summaries beside the rows

    @property
    def cuda(self) -> bool:
        """Whether the section runs on a CUDA device."""
        return self.device.type == "cuda"

    def left(self) -> float:
        """Seconds left of the section's budget (none once it was interrupted)."""
        return -1.0 if self.expired else self.deadline - time.monotonic()

    def row(self, **fields) -> dict:
        """Add a result row (a dict with a ``status``) and return it."""
        fields.setdefault("status", "ok")
        self.rows.append(fields)
        return fields

    def attempt(self, fields: dict, measure: Callable[[], dict | None]) -> dict:
        """A row from `measure()`'s results; skipped when the budget is spent, error if it raises."""
        if self.left() <= 0:
            return self.row(**fields, status="skipped (section budget spent)")
        try:
            results = measure() or {}
        except SectionTimeout:
            raise
        except Exception as error:  # one failing case (OOM, compile error) must not end the rest
            if self.expired:  # the interruption, wrapped by a library (Triton, inductor)
                raise SectionTimeout(f"interrupted {GRACE_S:.0f} s after the budget") from error
            first = (str(error).strip().splitlines() or [""])[0][:160]
            return self.row(
                **fields,
                status=f"error: {type(error).__name__}: {first}",
                traceback=traceback.format_exc(),
            )
        finally:
            if self.cuda:
                torch.cuda.empty_cache()
        return self.row(**{**fields, **results})

    def check(self, target: str, value: object, ok: bool | None) -> None:
        """Record a target check: what was asked, what was measured, met (None: not judged)."""
        self.checks.append({"target": target, "value": value, "ok": ok})


def status_of(record: dict) -> str:
    """A section's overall status from its record: ok, FAIL, error, partial or skipped."""
    if record.get("error"):
        return "error"
    if record.get("skipped"):
        return f"skipped ({record['skipped']})"
    rows, checks = record.get("rows", []), record.get("checks", [])
    if any(c["ok"] is False for c in checks) or any(
        str(r["status"]).startswith(("FAIL", "error")) for r in rows
    ):
        return "FAIL"
    if any("budget" in str(r["status"]) for r in rows):
        return "partial (budget spent)"
    return "ok"


def _alarm(seconds: float, ctx: Context) -> Callable[[], None]:
    """Interrupt the main thread with SectionTimeout after `seconds`; returns the cancel."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        ctx.expired = True
        raise SectionTimeout(f"interrupted {GRACE_S:.0f} s after its budget was spent")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    return cancel


def _settle(device: torch.device, record: dict) -> None:
    """Wait for the section's GPU work and free its memory; a CUDA error there is its error."""
    if device.type != "cuda":
        return
    try:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    except Exception as error:  # e.g. a device-side assert: later sections will fail too
        record.setdefault("error", f"{type(error).__name__}: {error}")
        record.setdefault("traceback", traceback.format_exc())


def run_section(
    section: Section, device: torch.device, smoke: bool, work_dir: Path, seconds: float
) -> dict:
    """Run one section with `seconds` of budget; its record, whatever happened."""
    record = {"name": section.name, "title": section.title, "budget_s": seconds}
    record["budget_reason"] = section.budget_reason
    if section.missing or section.run is None:
        record |= {"skipped": section.missing, "seconds": 0.0}
        return {**record, "status": status_of(record)}
    start = time.monotonic()
    ctx = Context(device, smoke, work_dir / section.name, math.inf if smoke else start + seconds)
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    cancel = (lambda: None) if smoke else _alarm(seconds + GRACE_S, ctx)
    try:
        section.run(ctx)
    except BaseException as error:  # a failing section is recorded; the next one still runs
        if isinstance(error, KeyboardInterrupt):
            raise
        record["error"] = f"{type(error).__name__}: {error}"
        record["traceback"] = traceback.format_exc()
    finally:
        cancel()
        _settle(device, record)
    record |= {"seconds": time.monotonic() - start, "rows": ctx.rows}
    record |= {"checks": ctx.checks, "notes": ctx.notes, "tables": ctx.tables}
    record["status"] = status_of(record)
    return record
