"""A short timing of a planned config on this machine: a few training steps and one evaluation.

Steps run on random tensors of the config's batch, crop, channels and classes, through the
model, loss, optimizer and weight average that training builds (`segls.train`,
`segls.predict`), so they cost what a training step costs; cutting the samples from a decoded
image is timed apart, and decoding is not timed again: the fingerprint's read times stand
in for it. A run's fixed costs (starting Python, imports, the first reads, checkpoints) are
added so the budget covers the whole command.

On a CPU the clock is the process's CPU time with torch on one thread, not the wall clock:
other jobs on the machine stretch wall-clock steps (with two busy processes beside it a
2-thread step on the project's 2-core VM took 7.7 times as long, torch's threads waiting on
each other at every barrier) but leave one thread's CPU time within about 10 %. The run's
step time is then that single-thread time divided by Amdahl's speedup for the threads the
run will use, with the parallel share `PARALLEL_SHARE` calibrated on that VM. So the plan is
the same on an idle and on a busy machine; it is as right as the speedup model is for this
machine, which the report checks against a wall-clock step when the machine was idle. On a
GPU, wall-clock time with the device synchronised is what the run will see.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from segls.config import Config
from segls.data import DataError, LabelMapper, SegDataset, build_transform
from segls.data.fingerprint import Fingerprint
from segls.metrics import CalibrationMetrics, SegMetrics
from segls.models import build_model, predict_logits, settings_from_config
from segls.plan.recipe import Timing
from segls.predict import build_criterion
from segls.train import build_objective, train_one_iter
from segls.train.optim import build_ema, build_optimizer

Parts = tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer, torch.nn.Module | None]
PROCESS_SECONDS = 8.0  # start-up of `tools/train.py` before the first step (measured, 2-core VM)
WARMUP_STEPS = 2
TIMED_STEPS = 4  # at least this many timed steps ...
TIMED_SECONDS = 3.0  # ... and until this long has passed (short steps are noisy) ...
MAX_TIMED_STEPS = 30  # ... but no more than this many
FIRST_STEP_SLACK = 10.0  # the first step pays one-off set-up costs: it ends a timing only if
# it is this many times over the limit
PARALLEL_SHARE = 0.82  # Amdahl's parallel share of a CPU training step with torch's threads:
# 2 threads ran U-Net/R18 steps (batch 8) 1.54x (128^2 crops) and 1.88x (256^2) as fast as 1
# thread on the 2-core VM, idle; 0.82 gives 1.70x
IDLE_SHARE = 0.9  # a timed step whose CPU time is at least this share of threads x wall time
# had the machine to itself

# The clock of a CPU timing: CPU seconds of this process (all threads). Tests replace it.
cpu_clock: Callable[[], float] = time.process_time
wall_clock: Callable[[], float] = time.perf_counter


def speedup(threads: int) -> float:
    """Amdahl's speedup of a CPU step on `threads` threads over one (PARALLEL_SHARE)."""
    return 1.0 / ((1.0 - PARALLEL_SHARE) + PARALLEL_SHARE / max(threads, 1))


@contextmanager
def single_thread(device: torch.device) -> Iterator[int]:
    """On a CPU, torch on one thread for the duration; yields the thread count a run uses."""
    threads = torch.get_num_threads()
    if device.type != "cpu":
        yield threads
        return
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


def clock(device: torch.device) -> Callable[[], float]:
    """The clock timings on `device` read: CPU time on a CPU, wall time on a GPU."""
    return cpu_clock if device.type == "cpu" else wall_clock


def _synchronise(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock times cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_parts(cfg: Config, device: torch.device) -> Parts:
    """Model, objective, optimizer and EMA as training builds them."""
    model = build_model(cfg.model, cfg.data.in_channels, cfg.data.num_classes).to(device)
    objective = build_objective(cfg, build_criterion(cfg).to(device))
    optimizer = build_optimizer(model, cfg.optimizer)
    return model, objective, optimizer, build_ema(model, cfg.optimizer.ema_decay)


Batch = tuple[torch.Tensor, torch.Tensor, torch.amp.GradScaler]


def _random_batch(cfg: Config, device: torch.device) -> Batch:
    """Random images and labels of the config's batch and crop, and a disabled scaler."""
    batch, (height, width) = cfg.data.batch_size, cfg.data.crop_size
    images = torch.randn(batch, cfg.data.in_channels, height, width, device=device)
    labels = torch.randint(0, cfg.data.num_classes, (batch, height, width), device=device)
    return images, labels, torch.amp.GradScaler(device.type, enabled=False)


def _train_step(parts: Parts, batch: Batch) -> None:
    """One training iteration as training runs it, the weight average included."""
    model, objective, optimizer, ema = parts
    images, labels, scaler = batch
    train_one_iter(model, objective, images, labels, optimizer, scaler)
    if ema is not None:
        ema.update_parameters(model)


def step_seconds(
    cfg: Config, device: torch.device, parts: Parts, limit: float | None = None
) -> float:
    """Median seconds of a training step at the config's batch and crop (`parts`: `build_parts`).

    Steps are timed after WARMUP_STEPS, at least TIMED_STEPS of them and for TIMED_SECONDS.

    A second step slower than `limit` (or a first one FIRST_STEP_SLACK times slower, as the
    first pays one-off set-up costs) is returned at once: the crop or model is too slow for
    the budget, and more steps would only spend it.
    """
    batch = _random_batch(cfg, device)
    now = clock(device)
    times: list[float] = []
    while len(times) < WARMUP_STEPS + MAX_TIMED_STEPS:
        _synchronise(device)
        start = now()
        _train_step(parts, batch)
        _synchronise(device)
        times.append(now() - start)
        slack = FIRST_STEP_SLACK if len(times) == 1 else 1.0
        if limit is not None and len(times) <= 2 and times[-1] > slack * limit:
            return times[-1]
        timed = times[WARMUP_STEPS:]
        if len(timed) >= TIMED_STEPS and sum(timed) >= TIMED_SECONDS:
            break
    return statistics.median(times[WARMUP_STEPS:])


@torch.no_grad()
def evaluation_seconds(
    cfg: Config, device: torch.device, model: torch.nn.Module, sizes: list[tuple[int, int]]
) -> float:
    """Seconds to predict and score images of `sizes` as ``eval.*`` says.

    One image of the median size is timed (after a warm-up pass) and the time scaled by the
    pixel count of all of them.
    """
    if not sizes:
        return 0.0
    model.eval()
    settings = settings_from_config(cfg)
    height = int(statistics.median(size[0] for size in sizes))
    width = int(statistics.median(size[1] for size in sizes))
    image = torch.randn(1, cfg.data.in_channels, height, width, device=device)
    labels = torch.randint(0, cfg.data.num_classes, (1, height, width), device=device)
    now = clock(device)
    elapsed = 0.0
    for _ in range(2):
        metrics = SegMetrics(cfg.data.num_classes, cfg.data.ignore_index)
        calibration = CalibrationMetrics(cfg.eval.calibration_bins, cfg.data.ignore_index)
        _synchronise(device)
        start = now()
        logits = predict_logits(model, image, (height, width), settings)
        metrics.update(logits, labels)
        calibration.update(logits, labels)
        _synchronise(device)
        elapsed = now() - start
    total_pixels = sum(h * w for h, w in sizes)
    return elapsed * total_pixels / (height * width)


def sample_seconds(cfg: Config, fp: Fingerprint, repeats: int = 8) -> float:
    """Seconds to cut one training sample (crop, flips, scaling) from a decoded image.

    Timed on the first training image, decoded once beforehand as the cache keeps it; 0 when
    that image cannot be read (the fingerprint lists the problem).
    """
    record = fp.train.records[0]
    transform = build_transform(cfg.data, train=True, seed=0)
    dataset = SegDataset(
        [Path(record.image)], [Path(record.mask)], transform, LabelMapper(cfg.data),
        cfg.data.in_channels, [], [], cache=True,
    )  # fmt: skip
    try:
        dataset[0]
    except (DataError, ValueError):
        return 0.0
    start = cpu_clock()
    for _ in range(repeats):
        dataset[0]
    return (cpu_clock() - start) / repeats


def checkpoint_seconds(parts: Parts) -> float:
    """Seconds to serialise one training checkpoint (weights, optimizer state and average).

    Written into memory, so planning leaves no file behind; the disk write is not timed.
    """
    model, _, optimizer, ema = parts
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    if ema is not None:
        state["ema"] = ema.state_dict()
    start = cpu_clock()
    torch.save(state, io.BytesIO())
    return cpu_clock() - start


def idle_wall_step(cfg: Config, parts: Parts, threads: int) -> float | None:
    """A wall-clock step on all `threads`, when the machine is idle enough to tell; else None.

    Idle means a one-thread step kept its core (CPU time at least IDLE_SHARE of the wall time)
    and a step on all threads kept them all. Only a check of the speedup model, for the report.
    """
    batch = _random_batch(cfg, torch.device("cpu"))

    def timed_step() -> tuple[float, float]:
        cpu, wall = cpu_clock(), wall_clock()
        _train_step(parts, batch)
        return cpu_clock() - cpu, wall_clock() - wall

    cpu, wall = timed_step()
    if cpu < IDLE_SHARE * wall:
        return None
    torch.set_num_threads(threads)
    try:
        timed_step()  # the first step on more threads starts them
        cpu, wall = timed_step()
    finally:
        torch.set_num_threads(1)
    return wall if cpu >= IDLE_SHARE * threads * wall else None


def measure(cfg: Config, device: torch.device, fp: Fingerprint, limit: float | None) -> Timing:
    """The `Timing` of `cfg` on `device`: steps, one evaluation, and the run's fixed costs.

    On a CPU every part is timed on one thread in CPU time and the step and the evaluation
    divided by `speedup` for the threads the run will use (see the module's docstring).
    """
    with single_thread(device) as threads:
        factor = speedup(threads) if device.type == "cpu" else 1.0
        parts = build_parts(cfg, device)
        step = step_seconds(cfg, device, parts, None if limit is None else limit * factor)
        step /= factor
        wall_step = None
        if device.type == "cpu" and (limit is None or step <= limit):
            wall_step = idle_wall_step(cfg, parts, threads)
        records = fp.train.records + (fp.val.records if fp.val is not fp.train else [])
        read = sum(record.read_seconds for record in records)
        per_sample = sample_seconds(cfg, fp)
        if not cfg.data.cache:
            per_sample += read / max(len(records), 1)
        step += cfg.data.batch_size * per_sample / max(cfg.data.num_workers, 1)
        sizes = [(record.height, record.width) for record in fp.val.records]
        evaluation = evaluation_seconds(cfg, device, parts[0], sizes) / factor
        startup = PROCESS_SECONDS + read
        clock_note = (
            f"1-thread CPU time / {factor:.2f} (Amdahl's speedup on {threads} threads)"
            if device.type == "cpu"
            else "wall-clock time, device synchronised"
        )
        checkpoint = checkpoint_seconds(parts)
    return Timing(str(device.type), step, evaluation, startup, checkpoint, clock_note, wall_step)
