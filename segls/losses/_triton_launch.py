"""What the two Triton backends (``_triton``, ``_upsample_triton``) launch alike.

The class chunking, the weight as the kernels read it, the parameters that carry the inputs
and the options (passed by name: a swapped stride cannot go unnoticed), the launch, and the
reduction of the programs' partial sums with the one host sync of ``check_labels``.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import triton

from segls.losses.checks import raise_bad_labels
from segls.losses.options import LossOptions


def class_blocks(logits: torch.Tensor, max_block_c: int) -> tuple[bool, int]:
    """(all classes in one chunk, chunk width) for the logits' C and class stride."""
    num_classes = logits.shape[1]
    if num_classes <= max_block_c:
        return True, triton.next_power_of_2(num_classes)
    # wide chunks when classes are contiguous (channels_last), narrow ones otherwise
    return False, min(128 if logits.stride(1) == 1 else 32, max_block_c)


def kernel_weight(options: LossOptions, device: torch.device) -> LossOptions:
    """The options with the class weights as the kernels read them: float32, dense, on device."""
    if options.weight is None:
        return options
    return options.with_weight(options.weight.to(device, torch.float32).contiguous())


def loss_arguments(logits: torch.Tensor, labels: torch.Tensor, options: LossOptions) -> dict:
    """The kernel parameters of the inputs and the options (the weight pointer: any if none)."""
    num_classes = logits.shape[1]
    lb_pos, lb_neg = options.targets(num_classes)
    weight = logits if options.weight is None else options.weight
    return dict(
        logits_ptr=logits, labels_ptr=labels, weight_ptr=weight, num_classes=num_classes,
        ignore_index=options.ignore_index, lb_pos=lb_pos, lb_neg=lb_neg,
    )  # fmt: skip


def block_meta(block_p: int, block_c: int, single_pass: bool, options: LossOptions) -> dict:
    """The compile-time parameters both loss kernels share."""
    has_weight = options.weight is not None
    return dict(BLOCK_P=block_p, BLOCK_C=block_c, SINGLE_PASS=single_pass, HAS_WEIGHT=has_weight)


def launch(kernel, num_programs: int, device: torch.device, arguments: dict, meta: dict) -> None:
    """Run `kernel` on `num_programs` programs (none: nothing), its parameters by name."""
    if num_programs:
        with torch.cuda.device(device) if device.type == "cuda" else nullcontext():
            kernel[(num_programs,)](**arguments, **meta)


def reduce_partials(
    partials: torch.Tensor, options: LossOptions, labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The scalar loss from the programs' partial sums (3, programs), and the 'mean' scale.

    With ``check_labels`` the bad-label counts are read first: the one host sync.
    """
    if options.check_labels and bool(partials[2].any()):
        raise_bad_labels(labels.long(), num_classes, options.ignore_index)
    if options.reduction == "none":
        return None, None
    loss = partials[0].sum(dtype=torch.float64)  # the programs' float32 sums, added in float64
    if options.reduction == "sum":
        return loss.float(), None
    denom = partials[1].sum(dtype=torch.float64)
    scale = torch.where(denom > 0, 1.0 / denom, 0.0)
    return (loss * scale).float(), scale.float()
