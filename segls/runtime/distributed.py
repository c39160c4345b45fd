"""Several processes, one model: torchrun's environment, the process group, DDP, collectives.

``torchrun --nproc_per_node=K tools/train.py CONFIG`` starts K copies of the script and tells
each its place through environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). `setup` reads them and joins the process group: NCCL with
one GPU per process (``cuda:LOCAL_RANK``), gloo on the CPU. Without them (plain ``python``)
nothing is initialised and every helper here answers as the only process, rank 0 of 1, so a
single-process run is exactly what it was before this module existed.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from segls import ConfigError
from segls.metrics.streaming import collective_device

__all__ = [
    "Context",
    "all_reduce_max",
    "all_reduce_sum",
    "barrier",
    "broadcast_buffers",
    "cleanup",
    "convert_sync_bn",
    "is_distributed",
    "is_main",
    "progress",
    "rank",
    "setup",
    "use_local_gpu",
    "world_size",
    "wrap_ddp",
]

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Context:
    """This process's place in the run and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # whether `setup` created the process group (`cleanup` ends it)

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes logs and checkpoints."""
        return self.rank == 0


def is_distributed() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank; 0 without a process group."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes; 1 without a process group."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process is rank 0 (always, without a process group)."""
    return rank() == 0


def _env_int(name: str) -> int:
    """An integer environment variable set by torchrun; a clear error if it is not one."""
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def _device_for(device: torch.device, local_rank: int, world: int) -> torch.device:
    """The device of the process with `local_rank`: its own GPU, or the CPU."""
    if device.type != "cuda":
        return device
    if device.index is not None:
        raise ConfigError(
            f"runtime.device={device} names one GPU, but torchrun started {world} processes; "
            "use runtime.device=cuda or auto (each process takes the GPU of its LOCAL_RANK), "
            "and choose GPUs with CUDA_VISIBLE_DEVICES"
        )
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} visible "
            "GPU(s); set torchrun's --nproc_per_node to at most the number of GPUs"
        )
    return torch.device("cuda", local_rank)


def use_local_gpu() -> None:
    """Under torchrun with several processes, make GPU ``LOCAL_RANK`` this process's current one.

    Called before anything touches CUDA, so that no process also opens a context (and takes
    memory) on GPU 0. Nothing happens without torchrun's variables or without CUDA.
    """
    world = os.environ.get("WORLD_SIZE", "1")
    local_rank = os.environ.get("LOCAL_RANK", "")
    if not (world.isdigit() and int(world) > 1 and local_rank.isdigit()):
        return
    if torch.cuda.is_available() and int(local_rank) < torch.cuda.device_count():
        torch.cuda.set_device(int(local_rank))


def setup(device: torch.device) -> Context:
    """Join the process group torchrun describes (if any); returns this process's Context.

    `device` is the one `segls.runtime.resolve_device` chose; under torchrun a CUDA device
    becomes ``cuda:LOCAL_RANK`` and the backend NCCL, a CPU device keeps gloo. A process
    group that already exists (made by the caller) is used as it is and left to the caller.
    """
    if dist.is_available() and dist.is_initialized():
        local_rank = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else dist.get_rank()
        world = dist.get_world_size()
        device = _device_for(device, local_rank, world) if world > 1 else device
        return Context(dist.get_rank(), world, local_rank, device, owns_group=False)
    world = _env_int("WORLD_SIZE") if "WORLD_SIZE" in os.environ else 1
    if world <= 1:
        return Context(device=device)
    missing = [name for name in _TORCHRUN_VARS if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={world} is set but {', '.join(missing)} are not; start multi-process "
            "training with torchrun (docs/TRAINING.md), or unset WORLD_SIZE for one process"
        )
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; train in one process")
    local_rank = _env_int("LOCAL_RANK")
    device = _device_for(device, local_rank, world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        takes_device = "device_id" in inspect.signature(dist.init_process_group).parameters
        dist.init_process_group("nccl", **({"device_id": device} if takes_device else {}))
    else:
        dist.init_process_group("gloo")
    return Context(dist.get_rank(), world, local_rank, device, owns_group=True)


def cleanup(context: Context) -> None:
    """Leave the process group if `setup` created it."""
    if context.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if is_distributed():
        dist.barrier()


def broadcast_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics) before evaluating `model`.

    DDP keeps the weights equal, but each rank's last forward pass updated its running
    statistics with its own batch; evaluation and the checkpoint must use one set of them.
    """
    if is_distributed():
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


def all_reduce_sum(values: list[float]) -> list[float]:
    """`values` summed element-wise over all ranks, in float64 (as they are in one process)."""
    if not is_distributed():
        return list(values)
    summed = torch.tensor(values, dtype=torch.float64, device=collective_device())
    dist.all_reduce(summed, op=dist.ReduceOp.SUM)
    return summed.tolist()


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor`'s element-wise maximum over all ranks (`tensor` itself in one process).

    One collective and no read: the caller reads the result when it needs it.
    """
    if not is_distributed():
        return tensor
    tensor = tensor.to(collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def convert_sync_bn(model: nn.Module, enabled: bool, context: Context) -> nn.Module:
    """`model` with SyncBatchNorm in place of BatchNorm when `enabled` and there are ranks.

    Torch's SyncBatchNorm synchronises GPU tensors only, so several CPU processes with
    ``runtime.sync_bn`` are refused; in one process there is nothing to synchronise.
    """
    if not enabled or context.world_size == 1:
        return model
    if context.device.type != "cuda":
        raise ConfigError(
            f"runtime.sync_bn=true needs CUDA devices, but {context.world_size} processes run "
            f"on {context.device} (torch's SyncBatchNorm only synchronises GPU tensors); "
            "set runtime.sync_bn=false"
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def wrap_ddp(model: nn.Module, context: Context) -> nn.Module:
    """`model` in DistributedDataParallel when there are several ranks, else `model` itself.

    DDP broadcasts rank 0's weights and buffers at construction, so every rank starts equal,
    and averages the gradients in the backward pass, so every rank stays equal.
    """
    if context.world_size == 1:
        return model
    if context.device.type == "cuda":
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[context.device.index], output_device=context.device.index
        )
    return nn.parallel.DistributedDataParallel(model)


def progress(total: int, desc: str, initial: int = 0, leave: bool = True) -> tqdm:
    """A progress bar with rate and ETA on stderr; hidden when stderr is not a terminal.

    Only rank 0 of a multi-process run shows bars.
    """
    disable = None if is_main() else True
    return tqdm(
        total=total, initial=initial, desc=desc, leave=leave, disable=disable, dynamic_ncols=True
    )
