"""Training-throughput benchmark: images/s and peak memory of a training step, per variant.

A variant combines the switches that change speed, not the maths: precision (fp32, fp16,
bf16), channels_last, torch.compile, the loss backend (torch, triton) and where the logits
are upsampled (``fused``: ``loss.upsample: fused``, for architectures whose head upsamples;
without it ``outside``, whatever the config says). Each variant trains
a fresh model (same seed) on one random batch of the config's crop and batch size through
`segls.train.train_one_iter`, as training does; no dataset is needed. Variants the device
cannot run are reported as skipped, never measured.

Peak memory on CUDA is ``max_memory_allocated`` over the timed steps (weights, optimizer
state, activations). On the CPU it is the rise of the peak resident set (VmHWM, reset through
/proc/self/clear_refs) over the resident set before the timed steps: a step's activations,
gradients and temporaries; None ("n/a") where /proc cannot do this.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import time
from dataclasses import dataclass

import torch

from benchmarks.memory import peak_mib, release_freed_memory, reset_peak
from segls import runtime
from segls.config import Config, ConfigError
from segls.models import build_model
from segls.models.names import has_head_upsampling
from segls.predict import build_criterion
from segls.train import build_objective, train_one_iter
from segls.train.optim import build_optimizer, learning_rate, set_lr

__all__ = [
    "IGNORE_FRACTION",
    "Variant",
    "all_variants",
    "benchmark",
    "default_variants",
    "parse_variant",
    "random_batch",
    "resolve_variants",
    "run_variant",
    "skip_reason",
]

IGNORE_FRACTION = 0.05
_AMP_NAMES = {amp: "fp32" if amp == "off" else amp for amp in runtime.AMP_DTYPES}
_TOKENS = {
    **{name: ("amp", amp) for amp, name in _AMP_NAMES.items()},
    **{amp: ("amp", amp) for amp in runtime.AMP_DTYPES},
    "channels_last": ("channels_last", True),
    "cl": ("channels_last", True),
    "compile": ("compile", True),
    "triton": ("loss_backend", "triton"),
    "torch": ("loss_backend", "torch"),
    "fused": ("loss_upsample", "fused"),
}


@dataclass(frozen=True)
class Variant:
    """One combination of the speed switches of a training step."""

    amp: str = "off"
    channels_last: bool = False
    compile: bool = False
    loss_backend: str = "torch"
    loss_upsample: str = "outside"

    @property
    def name(self) -> str:
        """The spec `parse_variant` reads back, e.g. ``bf16+channels_last+compile+triton``."""
        parts = [_AMP_NAMES[self.amp]]
        parts += ["channels_last"] if self.channels_last else []
        parts += ["compile"] if self.compile else []
        parts += ["triton"] if self.loss_backend == "triton" else []
        parts += ["fused"] if self.loss_upsample == "fused" else []
        return "+".join(parts)


def parse_variant(spec: str) -> Variant:
    """A Variant from ``+``-joined tokens: fp32|fp16|bf16, channels_last, compile, torch|triton,
    fused."""
    fields: dict = {}
    for token in spec.lower().split("+"):
        if token not in _TOKENS:
            raise ValueError(
                f"variant {spec!r}: unknown part {token!r}; join parts from "
                f"{', '.join(_TOKENS)} with '+', e.g. bf16+channels_last+triton"
            )
        key, value = _TOKENS[token]
        if key in fields and fields[key] != value:
            raise ValueError(f"variant {spec!r} sets {key} twice; give one value")
        fields[key] = value
    return Variant(**fields)


def all_variants() -> list[Variant]:
    """The full cartesian product of the switches but ``fused`` (24 variants)."""
    grid = itertools.product(runtime.AMP_DTYPES, (False, True), (False, True))
    return [
        Variant(amp, channels_last, compiled, backend)
        for amp, channels_last, compiled in grid
        for backend in ("torch", "triton")
    ]


def default_variants(device: torch.device) -> list[Variant]:
    """A readable grid: what each switch buys on `device`, the fp32 baseline first.

    On CUDA each precision step is shown with both loss backends. On the CPU the grid is the
    switches that run there, plus one fp16 and one triton row that show as skipped.
    """
    if device.type == "cuda":
        specs = ["fp32", "fp16", "bf16", "bf16+channels_last", "bf16+channels_last+compile"]
        return [parse_variant(f"{spec}+{loss}") for spec in specs for loss in ("torch", "triton")]
    specs = ["fp32", "fp32+channels_last", "bf16", "bf16+channels_last"]
    specs += ["bf16+channels_last+compile", "fp16", "fp32+triton"]
    return [parse_variant(spec) for spec in specs]


def resolve_variants(specs: list[str] | None, device: torch.device) -> list[Variant]:
    """Variants from command-line specs: None or ["default"], ["all"], or `parse_variant` specs."""
    if not specs or specs == ["default"]:
        return default_variants(device)
    if specs == ["all"]:
        return all_variants()
    return [parse_variant(spec) for spec in specs]


def skip_reason(variant: Variant, device: torch.device, allow_compile: bool) -> str | None:
    """Why `variant` cannot (or should not) run on `device`, or None when it runs."""
    if device.type != "cuda" and (variant.amp == "fp16" or variant.loss_backend == "triton"):
        return "needs CUDA"
    if variant.loss_backend == "triton" and importlib.util.find_spec("triton") is None:
        return "needs triton installed"
    if variant.compile and not allow_compile:
        slow = "compiling on the CPU is slow; " if device.type == "cpu" else ""
        return f"{slow}pass --compile"
    try:
        runtime.amp_dtype(variant.amp, device)
    except ConfigError as error:
        return str(error).split(";")[0]
    return None


def _upsample_skip(cfg: Config, variant: Variant) -> str | None:
    """Why a ``fused`` variant cannot run with the config's architecture, or None."""
    if variant.loss_upsample == "fused" and has_head_upsampling(cfg.model.arch) is False:
        return f"{cfg.model.arch} has no head upsampling to fuse"
    return None


def random_batch(
    cfg: Config, device: torch.device, memory_format: torch.memory_format = torch.preserve_format
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normal images N×C_in×H×W and labels in [0, num_classes) with ~5 % ignore_index."""
    data = cfg.data
    height, width = data.crop_size
    generator = torch.Generator().manual_seed(cfg.runtime.seed)
    images = torch.randn(data.batch_size, data.in_channels, height, width, generator=generator)
    labels = torch.randint(
        0, data.num_classes, (data.batch_size, height, width), generator=generator
    )
    ignored = torch.rand(labels.shape, generator=generator) < IGNORE_FRACTION
    labels[ignored] = data.ignore_index
    return images.to(device, memory_format=memory_format), labels.to(device)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_variant(
    cfg: Config, variant: Variant, device: torch.device, iters: int, warmup: int
) -> dict:
    """Train a fresh model for `warmup` + `iters` steps; measure the last `iters`."""
    cfg = copy.deepcopy(cfg)
    cfg.loss.backend = variant.loss_backend
    cfg.loss.upsample = variant.loss_upsample
    amp_dtype = runtime.amp_dtype(variant.amp, device)
    memory_format = torch.channels_last if variant.channels_last else torch.preserve_format
    runtime.seed_everything(cfg.runtime.seed)
    if variant.compile:
        torch.compiler.reset()
    model = build_model(cfg.model, cfg.data.in_channels, cfg.data.num_classes, cfg.loss.upsample)
    model = model.to(device, memory_format=memory_format)
    train_model = torch.compile(model) if variant.compile else model
    criterion = build_objective(cfg, build_criterion(cfg).to(device))
    optimizer = build_optimizer(model, cfg.optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
    images, labels = random_batch(cfg, device, memory_format)

    def step(iteration: int) -> dict:
        set_lr(optimizer, learning_rate(iteration, cfg.optimizer, cfg.schedule))
        return train_one_iter(
            train_model, criterion, images, labels, optimizer, scaler, amp_dtype,
            cfg.optimizer.grad_clip,
        )  # fmt: skip

    warmup_start = time.perf_counter()
    for iteration in range(warmup):
        step(iteration)
    _synchronize(device)
    warmup_seconds = time.perf_counter() - warmup_start
    release_freed_memory(device)
    start_kib = reset_peak(device)
    _synchronize(device)
    start = time.perf_counter()
    for iteration in range(warmup, warmup + iters):
        result = step(iteration)
    _synchronize(device)
    seconds = time.perf_counter() - start
    return {
        "images_per_s": iters * cfg.data.batch_size / seconds,
        "seconds": seconds,
        "warmup_seconds": warmup_seconds,
        "peak_mib": peak_mib(device, start_kib),
        "loss": float(result.loss),
    }


def benchmark(
    cfg: Config,
    variants: list[Variant] | None = None,
    iters: int = 20,
    warmup: int = 5,
    allow_compile: bool | None = None,
) -> list[dict]:
    """One row per variant: its switches, ``status`` ("ok", "skipped (...)", "failed: ...")
    and, when measured, images/s, speed-up over the first measured row, peak MiB and loss.

    Threads, determinism and device come from ``cfg.runtime`` (`segls.runtime.configure`).
    `allow_compile` None means compile on CUDA only (compiling on the CPU is slow).
    """
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    device = runtime.configure(cfg.runtime)
    variants = default_variants(device) if variants is None else variants
    allow_compile = device.type == "cuda" if allow_compile is None else allow_compile
    rows, baseline = [], None
    for variant in variants:
        row = {"variant": variant.name, **vars(variant), "iters": iters, "warmup": warmup}
        reason = skip_reason(variant, device, allow_compile) or _upsample_skip(cfg, variant)
        if reason is not None:
            rows.append({**row, "status": f"skipped ({reason})"})
            continue
        try:
            measured = run_variant(cfg, variant, device, iters, warmup)
        except Exception as error:  # one variant failing (OOM, no compiler) must not end the run
            first_line = (str(error).strip().splitlines() or [""])[0]
            rows.append({**row, "status": f"failed: {type(error).__name__}: {first_line}"})
            continue
        finally:
            release_freed_memory(device)
        baseline = baseline or measured["images_per_s"]
        speedup = measured["images_per_s"] / baseline
        rows.append({**row, "status": "ok", **measured, "speedup": speedup})
    return rows
