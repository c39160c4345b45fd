"""Count the host syncs of training: the calls that make Python wait for the device or the ranks.

On CUDA the count is torch's own: ``torch.cuda.set_sync_debug_mode("warn")`` makes every
synchronising CUDA call (a device-to-host read, a blocking copy, a stream or device
synchronize) issue a warning, and each warning is one sync. Without CUDA nothing syncs, so
`SyncCounter` counts the calls that would: the Python-level reads of a tensor's values
(``.item()``, ``.tolist()``, ``.cpu()``, ``.numpy()``, ``bool``/``int``/``float``/index of a
tensor) and the ``torch.distributed`` collectives, each with the line that made it. A read
that a CUDA run makes on a tensor that lives on the host there too is listed but not counted
(`HOST_SIDE` says which and why). What the CPU count cannot see is a sync hidden inside a
C++ operator (boolean-mask indexing, ``nonzero``); the CUDA count sees those as well.

`count_train_syncs` runs `segls.train.train` under a counter and splits the count by
iteration, so a report can say how many syncs an ordinary iteration makes (one without
logging, evaluation or a checkpoint) and where each comes from.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from segls.config import Config
from segls.train import loop

__all__ = ["HOST_SIDE", "SyncCounter", "SyncEvent", "count_train_syncs", "iteration_kinds"]

_TENSOR_READS = (
    "item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__",
)  # fmt: skip
_COLLECTIVES = (
    "all_reduce", "broadcast", "all_gather", "all_gather_into_tensor", "all_gather_object",
    "broadcast_object_list", "reduce", "reduce_scatter", "gather", "scatter", "all_to_all",
    "barrier",
)  # fmt: skip
# (a path fragment, a function name or None for any): reads that a CUDA run makes on host
# tensors too, found anywhere on the call's stack, and why they cost no sync there.
HOST_SIDE = (
    ("torch/utils/data/", None, "the data pipeline works on the host"),
    ("segls/data/", None, "the data pipeline works on the host"),
    ("torch/optim/", "_get_value", "torch keeps optimizer step counts on the host"),
    ("segls/train/optim.py", "update_ema", "the EMA's update count lives on the host"),
    ("segls/losses/_torch.py", "backward", "read only when the gradient is on the host"),
)
_HERE = Path(__file__).as_posix()


@dataclass
class SyncEvent:
    """One synchronising call: what it was, where, in which iteration; `host_side` if exempt."""

    kind: str
    site: str
    iteration: int
    host_side: str | None = None


def _host_side_reason(frame) -> str | None:
    """Why the call whose innermost frame is `frame` costs no sync on CUDA, or None."""
    while frame is not None:
        path = frame.f_code.co_filename.replace("\\", "/")
        for fragment, function, reason in HOST_SIDE:
            if fragment in path and function in (None, frame.f_code.co_name):
                return reason
        frame = frame.f_back
    return None


def _site(frame) -> str:
    """``file:line function`` of the innermost frame, ``<- segls/...`` the segls code behind it."""

    def where(f) -> str:
        path = f.f_code.co_filename.replace("\\", "/")
        short = path[path.rfind("segls/") :] if "segls/" in path else "/".join(path.split("/")[-3:])
        return f"{short}:{f.f_lineno} {f.f_code.co_name}"

    here, caller = where(frame), frame
    while caller is not None and "/segls/" not in caller.f_code.co_filename.replace("\\", "/"):
        caller = caller.f_back
    if caller is None or caller is frame:
        return here
    return f"{here} <- {where(caller)}"


@dataclass
class SyncCounter:
    """Context manager that records synchronising calls as `SyncEvent`s (see the module doc).

    `cuda` None picks torch's sync debug mode when CUDA is available, the Python-level spy
    otherwise. `mark` starts a new iteration; events before the first mark belong to 0.
    """

    cuda: bool | None = None
    events: list[SyncEvent] = field(default_factory=list)
    iteration: int = 0

    def __post_init__(self) -> None:
        self.cuda = torch.cuda.is_available() if self.cuda is None else self.cuda
        self._undo: list = []

    def mark(self, iteration: int) -> None:
        """Attribute the calls from now on to `iteration`."""
        self.iteration = iteration

    def record(self, kind: str, frame) -> None:
        """Record one call made from `frame` (the spy's and the warnings' hook)."""
        self.events.append(SyncEvent(kind, _site(frame), self.iteration, None))
        if not self.cuda:
            self.events[-1].host_side = _host_side_reason(frame)

    def counted(self, iteration: int | None = None) -> list[SyncEvent]:
        """The events that count (not `host_side`), of one iteration or all."""
        return [
            event
            for event in self.events
            if event.host_side is None and iteration in (None, event.iteration)
        ]

    def __enter__(self) -> SyncCounter:
        for name in _COLLECTIVES:
            if hasattr(dist, name):
                self._patch(dist, name, f"collective {name}")
        if self.cuda:
            self._watch_cuda()
        else:
            for name in _TENSOR_READS:
                self._patch(torch.Tensor, name, f"Tensor.{name.strip('_')}")
        return self

    def __exit__(self, *exc_info) -> None:
        while self._undo:
            self._undo.pop()()

    def _patch(self, owner, name: str, kind: str) -> None:
        """Wrap ``owner.name`` so that each call is recorded; undone on exit."""
        real = getattr(owner, name)
        own = owner.__dict__.get(name, None) if isinstance(owner, type) else real

        def spied(*args, **kwargs):
            self.record(kind, sys._getframe(1))
            return real(*args, **kwargs)

        setattr(owner, name, spied)
        if own is None:
            self._undo.append(lambda: delattr(owner, name))
        else:
            self._undo.append(lambda: setattr(owner, name, own))

    def _watch_cuda(self) -> None:
        """Turn on torch's sync debug mode and record each of its warnings."""
        previous_mode = torch.cuda.get_sync_debug_mode()
        catcher = warnings.catch_warnings()
        catcher.__enter__()
        warnings.filterwarnings("always", message=".*synchroniz")
        real_showwarning = warnings.showwarning

        def show(message, category, filename, lineno, *args, **kwargs):
            if "synchroniz" not in str(message):
                return real_showwarning(message, category, filename, lineno, *args, **kwargs)
            self.events.append(SyncEvent("cuda sync", f"{filename}:{lineno}", self.iteration))

        warnings.showwarning = show
        torch.cuda.set_sync_debug_mode("warn")
        self._undo.append(lambda: catcher.__exit__(None, None, None))
        self._undo.append(lambda: torch.cuda.set_sync_debug_mode(previous_mode))


def iteration_kinds(cfg: Config) -> dict[int, str]:
    """Each iteration of `cfg`'s run as "plain", or what else it does: log, eval, save, last."""
    sched, kinds = cfg.schedule, {}
    for iteration in range(1, sched.max_iters + 1):
        extras = [
            name
            for name, interval in (
                ("log", sched.log_interval),
                ("eval", sched.eval_interval),
                ("save", sched.checkpoint_interval),
            )
            if iteration % interval == 0
        ]
        extras += ["last"] if iteration == sched.max_iters else []
        kinds[iteration] = "+".join(extras) or "plain"
    return kinds


def count_train_syncs(cfg: Config, work_dir: str | Path, cuda: bool | None = None) -> dict:
    """Train `cfg` into `work_dir` under a `SyncCounter`; the syncs per iteration and where.

    Returns ``per_iteration`` (iteration -> counted ``reads`` and ``collectives``), ``kinds``
    (`iteration_kinds`), ``plain_max`` (the most reads and collectives of any plain
    iteration), ``sites`` (site -> calls per plain iteration), ``host_side`` (exempt calls by
    reason) and ``scores`` (what training returned).
    """
    counter = SyncCounter(cuda)
    real_step = loop._step

    def marked_step(run, iteration: int) -> loop.Iteration:
        counter.mark(iteration)
        return real_step(run, iteration)

    with contextlib.ExitStack() as stack:
        stack.callback(setattr, loop, "_step", real_step)
        loop._step = marked_step
        with counter:
            scores = loop.train(cfg, work_dir)
    kinds = iteration_kinds(cfg)
    per_iteration = {}
    for iteration in kinds:
        events = counter.counted(iteration)
        collectives = sum(event.kind.startswith("collective") for event in events)
        per_iteration[iteration] = {"reads": len(events) - collectives, "collectives": collectives}
    plain = [i for i, kind in kinds.items() if kind == "plain"]
    sites = Counter(e.site for e in counter.counted() if e.iteration in plain)
    exempt = Counter(e.host_side for e in counter.events if e.host_side is not None)
    return {
        "per_iteration": per_iteration,
        "kinds": kinds,
        "plain_max": {
            key: max((per_iteration[i][key] for i in plain), default=None)
            for key in ("reads", "collectives")
        },
        "sites": {site: count / max(len(plain), 1) for site, count in sites.items()},
        "host_side": dict(exempt),
        "scores": scores,
    }
