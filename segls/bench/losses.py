"""What the loss benchmarks share: random inputs and the dense formulation segls replaces."""

from __future__ import annotations

import torch

__all__ = ["IGNORE", "make_inputs", "one_hot_dense"]

IGNORE = 255


def make_inputs(
    shape: tuple[int, ...],
    ignore_frac: float = 0.05,
    dtype: torch.dtype = torch.float32,
    layout: str = "contiguous",
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits (N(0, 9), `dtype`, contiguous or channels_last) and int64 labels.

    A fraction `ignore_frac` of the labels, drawn at random, is `IGNORE`.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    logits = torch.randn(shape, generator=generator, device=device).mul_(3).to(dtype)
    if layout == "channels_last":
        logits = logits.contiguous(memory_format=torch.channels_last)
    label_shape = (shape[0], *shape[2:])
    labels = torch.randint(0, shape[1], label_shape, generator=generator, device=device)
    labels[torch.rand(label_shape, generator=generator, device=device) < ignore_frac] = IGNORE
    return logits, labels


def one_hot_dense(logits: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """The dense formulation: an explicit smoothed one-hot target times log_softmax."""
    num_classes = logits.shape[1]
    ignored = labels == IGNORE
    safe = labels.masked_fill(ignored, 0)
    target = torch.full_like(logits, eps / num_classes)
    target.scatter_(1, safe.unsqueeze(1), 1.0 - eps + eps / num_classes)
    per_pixel = -(torch.log_softmax(logits, 1) * target).sum(1)
    per_pixel = per_pixel.masked_fill(ignored, 0.0)
    return per_pixel.sum() / (~ignored).sum()
