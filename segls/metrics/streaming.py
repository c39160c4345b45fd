"""A tensor of sums over batches, kept on one device and summed across processes on request.

What `segls.metrics.SegMetrics` (a confusion matrix) and `segls.metrics.CalibrationMetrics`
(calibration sums) accumulate. Imports torch only.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["StreamingSum", "collective_device"]


class StreamingSum:
    """Sums of batches of one `shape` and `dtype`; created on the first batch's device.

    The sums live on `device` when given, else on the device of the first `add`. Reducing
    across processes never changes the local sums, so doing it twice counts nothing twice.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device | str | None = None,
    ) -> None:
        self.shape = tuple(shape)
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else None
        self._sums: torch.Tensor | None = None

    def add(self, batch: torch.Tensor) -> None:
        """Add one batch's sums (a tensor of `shape`)."""
        if self._sums is None:
            self._sums = torch.zeros(
                self.shape, dtype=self.dtype, device=self.device or batch.device
            )
        self._sums += batch.to(self._sums.device)

    def reset(self) -> None:
        """Forget all sums."""
        self._sums = None

    @property
    def value(self) -> torch.Tensor:
        """A copy of this process's sums (zeros before the first batch)."""
        if self._sums is None:
            return self._zeros(self.device or torch.device("cpu"))
        return self._sums.clone()

    def reduce_across_processes(self) -> torch.Tensor:
        """The sums over all processes (all_reduce SUM); the local sums stay as they are.

        Every rank must call it, including ranks that saw no batch. Without an initialised
        process group (or with one process) it returns a copy of the local sums.
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self.value
        if self._sums is not None:
            summed = self._sums.clone()
        else:
            summed = self._zeros(self.device or collective_device())
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return summed

    def _zeros(self, device: torch.device) -> torch.Tensor:
        """Empty sums on `device`."""
        return torch.zeros(self.shape, dtype=self.dtype, device=device)


def collective_device() -> torch.device:
    """The device the default process group's backend communicates tensors on."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
