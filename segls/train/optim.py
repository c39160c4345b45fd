"""The optimizer, its learning rate as a pure function of the iteration, and weight averaging.

The learning rate is set before every step from `learning_rate(iteration)` (nanoGPT's
``get_lr(it)``), so a resumed run needs no scheduler state: the iteration says it all.
"""

from __future__ import annotations

import torch
from torch import nn

from segls.config import OptimizerConfig, ScheduleConfig

__all__ = [
    "build_ema",
    "build_optimizer",
    "learning_rate",
    "poly_warmup_factor",
    "set_lr",
    "update_ema",
]


def build_optimizer(model: nn.Module, opt_cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW over `model`'s trainable parameters.

    Weight decay applies to weight matrices and kernels only: 1-D parameters (biases and the
    scales/shifts of normalisation layers) are not decayed, since shrinking them towards zero
    does not regularise the function and hurts normalised networks.
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": opt_cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if opt_cfg.type == "sgd":
        return torch.optim.SGD(groups, lr=opt_cfg.lr, momentum=opt_cfg.momentum)
    return torch.optim.AdamW(groups, lr=opt_cfg.lr, betas=tuple(opt_cfg.betas))


def poly_warmup_factor(iteration: int, sched_cfg: ScheduleConfig, base_lr: float) -> float:
    """Learning-rate multiplier for the step after `iteration` steps: poly decay, linear warm-up.

    ``lr = (base_lr - min_lr) * (1 - iteration / max_iters) ** power + min_lr``; during the
    first ``warmup_iters`` steps it is scaled by a factor rising linearly from
    ``warmup_ratio`` to 1, and during the last ``cooldown_iters`` steps by a factor falling
    linearly from 1 to 0 (a warm-up/stable/decay schedule when ``power`` is 0).
    """
    progress_done = min(iteration, sched_cfg.max_iters) / sched_cfg.max_iters
    min_fraction = sched_cfg.min_lr / base_lr if base_lr > 0 else 0.0
    factor = (1 - min_fraction) * (1 - progress_done) ** sched_cfg.power + min_fraction
    if iteration < sched_cfg.warmup_iters:
        ramp = iteration / sched_cfg.warmup_iters
        factor *= sched_cfg.warmup_ratio + (1 - sched_cfg.warmup_ratio) * ramp
    cooldown_start = sched_cfg.max_iters - sched_cfg.cooldown_iters
    if sched_cfg.cooldown_iters > 0 and iteration > cooldown_start:
        factor *= max(sched_cfg.max_iters - iteration, 0) / sched_cfg.cooldown_iters
    return factor


def learning_rate(iteration: int, opt_cfg: OptimizerConfig, sched_cfg: ScheduleConfig) -> float:
    """The learning rate of the step after `iteration` steps: ``optimizer.lr`` times the factor.

    The same float as ``LambdaLR(optimizer, poly_warmup_factor)`` gives after `iteration`
    scheduler steps (``base_lr * factor``), which is what runs used before this function.
    """
    return opt_cfg.lr * poly_warmup_factor(iteration, sched_cfg, opt_cfg.lr)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every parameter group of `optimizer` the learning rate `lr`."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def build_ema(model: nn.Module, decay: float | None) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of `model`'s weights and buffers, or None without a decay.

    Call `update_ema` after each optimizer step; ``ema.module`` is the averaged network.
    Buffers (batch-norm statistics) are averaged too, so the average can be evaluated as it
    is.
    """
    if decay is None:
        return None
    return torch.optim.swa_utils.AveragedModel(
        model,
        multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay),
        use_buffers=True,
    )


def update_ema(ema: torch.optim.swa_utils.AveragedModel, model: nn.Module) -> None:
    """``ema.update_parameters(model)`` without its host sync on CUDA; the same arithmetic.

    torch's update copies the average's update count (a tensor on the host) to the device at
    every call, a blocking copy that waits for the device. The EMA's averaging function does
    not use the count, so here it stays on the host, where reading it costs nothing.
    """
    averaged = [t.detach() for t in (*ema.module.parameters(), *ema.module.buffers())]
    current = [t.detach() for t in (*model.parameters(), *model.buffers())]
    with torch.no_grad():
        if int(ema.n_averaged) == 0:
            for target, source in zip(averaged, current, strict=True):
                target.copy_(source)
        else:
            groups: dict[tuple, tuple[list, list]] = {}
            for target, source in zip(averaged, current, strict=True):
                group = groups.setdefault((target.device, target.dtype), ([], []))
                group[0].append(target)
                group[1].append(source)
            for targets, sources in groups.values():
                ema.multi_avg_fn(targets, sources, None)
        ema.n_averaged += 1
