"""Peak memory of a piece of work: CUDA's allocator counters, or the process's resident set.

On the CPU the peak is the rise of the peak resident set (VmHWM, reset by writing 5 to
/proc/self/clear_refs) over the resident set when the window opens: everything the work
allocated and touched, temporaries included. Linux only; elsewhere the figure is None.

By default glibc keeps freed memory in its heap, so whether a step's temporaries raise the
resident set depends on what earlier steps left there. A child process started with
`LIVE_PEAK_ENV` maps every allocation of 64 KiB or more on its own and unmaps it when freed;
its figure is then the peak of the live allocations.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable

import torch

__all__ = [
    "LIVE_PEAK_ENV",
    "peak_mib",
    "peak_of",
    "release_freed_memory",
    "reset_peak",
    "resident_kib",
]

LIVE_PEAK_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}


def release_freed_memory(device: torch.device) -> None:
    """Return freed memory so the next variant's peak is not hidden in the previous one's."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        return
    try:
        ctypes.CDLL(None).malloc_trim(0)  # glibc keeps freed heap pages resident otherwise
    except (OSError, AttributeError):
        pass


def resident_kib() -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of this process in KiB, or None without /proc."""
    try:
        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    except (OSError, KeyError, ValueError):
        return None


def reset_peak(device: torch.device) -> int | None:
    """Start a peak-memory window; returns the CPU resident set in KiB (None if unavailable)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return 0
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return None
    resident = resident_kib()
    return None if resident is None else resident[0]


def peak_mib(device: torch.device, start_kib: int | None) -> float | None:
    """Peak memory of the window opened by `reset_peak`, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    resident = resident_kib()
    if start_kib is None or resident is None:
        return None
    return max(resident[1] - start_kib, 0) / 1024


def peak_of(work: Callable[[], object], device: torch.device) -> float | None:
    """Peak memory of one call of ``work`` above what is live before it, in MiB."""
    release_freed_memory(device)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    start = reset_peak(device)
    work()
    peak = peak_mib(device, start)
    return None if peak is None else peak - before / 2**20
