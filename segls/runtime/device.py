"""Where a run executes: device, mixed-precision dtype, threads and determinism.

The training loop and inference ask this module; they do not decide any of these themselves.

Mixed precision (``runtime.amp``):

- ``off``: float32 everywhere.
- ``bf16``: autocast to bfloat16 on CUDA (needs a GPU that supports it) or on the CPU.
  No gradient scaler: bfloat16 has float32's exponent range.
- ``fp16``: autocast to float16 with a gradient scaler, CUDA only. On the CPU float16
  autocast is slow and poorly covered, so asking for it there is an error that suggests bf16.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from segls import ConfigError
from segls.runtime import distributed
from segls.runtime.names import AMP_MODES
from segls.runtime.seeds import seed_everything

__all__ = [
    "AMP_DTYPES",
    "EVAL_MEMORY",
    "amp_dtype",
    "autocast",
    "configure",
    "is_out_of_memory",
    "lower_on_oom",
    "resolve_device",
    "set_determinism",
]

# What to lower when an evaluation (during training or tools/test.py) cannot allocate.
EVAL_MEMORY = (
    "eval.scales, data.val_batch_size, or predict in windows (eval.mode=slide with a smaller "
    "eval.crop_size)"
)

AMP_DTYPES = dict(zip(AMP_MODES, (None, torch.float16, torch.bfloat16), strict=True))  # runtime.amp


def resolve_device(name: str) -> torch.device:
    """The torch device for ``runtime.device``: auto, cpu, cuda or cuda:N."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(
            f"runtime.device={name!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"runtime.device={name!r} but CUDA is not available; use runtime.device=cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"runtime.device={name!r} but only {torch.cuda.device_count()} CUDA device(s) "
                "exist; pick one of them"
            )
    elif device.type != "cpu":
        raise ConfigError(
            f"runtime.device={name!r} is not supported; use auto, cpu, cuda or cuda:N"
        )
    return device


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``runtime.amp`` on `device`, or None for float32."""
    if amp not in AMP_DTYPES:
        raise ConfigError(f"runtime.amp={amp!r} is not one of {sorted(AMP_DTYPES)}")
    dtype = AMP_DTYPES[amp]
    if dtype is torch.float16 and device.type != "cuda":
        raise ConfigError(
            f"runtime.amp=fp16 needs a CUDA device but the run uses {device}; "
            "use runtime.amp=bf16 (supported on the CPU) or runtime.amp=off"
        )
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"runtime.amp=bf16 but {torch.cuda.get_device_name(device)} has no bfloat16 support; "
            "use runtime.amp=fp16 or runtime.amp=off"
        )
    return dtype


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to `dtype` on `device`'s type (from `amp_dtype`); a no-op for None (float32)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def set_determinism(enabled: bool) -> None:
    """Make kernels deterministic (slower), or let cuDNN pick the fastest algorithms.

    Deterministic mode is strict: an operation without a deterministic implementation raises
    (torch's message names it). ``CUBLAS_WORKSPACE_CONFIG`` must be set before CUDA starts, so
    call this before the first CUDA operation.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def configure(runtime_cfg) -> torch.device:
    """Apply a checked ``RuntimeConfig``: threads, determinism, seeds. Returns the device."""
    if runtime_cfg.num_threads > 0:
        torch.set_num_threads(runtime_cfg.num_threads)
    set_determinism(runtime_cfg.deterministic)
    distributed.use_local_gpu()  # under torchrun, before anything opens a context on GPU 0
    device = resolve_device(runtime_cfg.device)
    seed_everything(runtime_cfg.seed)
    return device


# torch's CPU allocator says "can't allocate memory" on Linux, "not enough memory" on Windows.
_ALLOCATION_TEXTS = (
    "can't allocate memory", "not enough memory", "out of memory", "insufficient memory",
)  # fmt: skip


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` says memory ran out: MemoryError, torch's OOM, the CPU allocator, cv2."""
    if isinstance(error, MemoryError | torch.OutOfMemoryError):
        return True
    readers = isinstance(error, RuntimeError) or type(error).__module__.startswith("cv2")
    return readers and any(text in str(error).lower() for text in _ALLOCATION_TEXTS)


@contextlib.contextmanager
def lower_on_oom(what: str, settings: str) -> Iterator[None]:
    """Turn an allocation failure inside the block into one ConfigError naming `settings`."""
    try:
        yield
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = next((line for line in lines if "memory" in line.lower()), type(error).__name__)
        raise ConfigError(f"{what} ran out of memory ({reason}); lower {settings}") from error
