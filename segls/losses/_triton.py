"""Triton backend: one fused pass over the logits writes the loss terms and the gradient.

Same maths as ``_torch.py``. Each program takes a block of pixels along the innermost pixel
dimension and reads their C logits through the tensors' strides, so contiguous NCHW,
channels_last and strided views are read in place. Up to ``MAX_BLOCK_C`` classes stay in
registers (one read of the logits); more take an online softmax over class chunks (two reads).

Host syncs: none unless ``check_labels`` is on. The kernel writes per-program partial sums of
the loss and of the valid weight (the 'mean' denominator), reduced afterwards by torch ops on
the device. The gradient is stored *without* the 1/denominator: backward has to scale by
``grad_output`` anyway (its value is on the device; testing it for 1 would be a sync), so the
denominator rides along in that same pass, in place when autograd frees the graph. That spares
a separate pass over the labels before the kernel, and an unscaled float16/bfloat16 gradient
does not underflow when the valid-pixel count is large. Labels outside [0, C) count as ignored
and raise a per-program flag; ``check_labels=True`` reads that flag, which is the one sync.

This module imports triton at import time; ``functional`` imports it only for the Triton
backend. ``TRITON_INTERPRET=1``, set before triton is first imported, runs the kernel on CPU
tensors through Triton's interpreter (for tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from segls.losses._composite import differentiable_grad, remember_logits
from segls.losses._torch import scale_saved_grad
from segls.losses._triton_launch import (
    block_meta,
    class_blocks,
    kernel_weight,
    launch,
    loss_arguments,
    reduce_partials,
)
from segls.losses.options import LossOptions

INTERPRETED = bool(triton.knobs.runtime.interpret)
MAX_BLOCK_C = 256  # most classes held in registers per pixel; more use the looped path
TILE = 2048  # logits per program (BLOCK_P * BLOCK_C) when all classes fit
LOOP_TILE = 1024  # logits per program and chunk on the looped path (more per-pixel state)
NUM_WARPS = 8
MAX_PIXEL_DIMS = 4  # pixel dims (N and spatial, after merging) the kernel can index
INDEX64_FROM = 2**31  # element offsets this large switch the kernel to 64-bit index math


@triton.jit
def _label_smooth_ce_kernel(
    logits_ptr, labels_ptr, weight_ptr, grad_ptr, loss_ptr, partials_ptr,
    num_classes, ignore_index, lb_pos, lb_neg,
    size1, size2, size3, num_inner_blocks,
    x_stride0, x_stride1, x_stride2, x_stride3, x_stride_c,
    y_stride0, y_stride1, y_stride2, y_stride3,
    g_stride0, g_stride1, g_stride2, g_stride3, g_stride_c,
    o_stride0, o_stride1, o_stride2, o_stride3,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, SINGLE_PASS: tl.constexpr,
    HAS_WEIGHT: tl.constexpr, WRITE_GRAD: tl.constexpr, WRITE_LOSS: tl.constexpr,
    INDEX64: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    inner_block = pid % num_inner_blocks
    outer = (pid // num_inner_blocks).to(tl.int64)
    o2 = outer % size2
    o1 = (outer // size2) % size1
    o0 = outer // size2 // size1
    x_row = logits_ptr + o0 * x_stride0 + o1 * x_stride1 + o2 * x_stride2
    y_row = labels_ptr + o0 * y_stride0 + o1 * y_stride1 + o2 * y_stride2
    g_row = grad_ptr + o0 * g_stride0 + o1 * g_stride1 + o2 * g_stride2

    inner = tl.arange(0, BLOCK_P)
    cls = tl.arange(0, BLOCK_C)
    if INDEX64:
        inner = inner_block.to(tl.int64) * BLOCK_P + inner.to(tl.int64)
        cls = cls.to(tl.int64)
    else:
        inner += inner_block * BLOCK_P
    pixel_mask = inner < size3
    labels = tl.load(y_row + inner * y_stride3, mask=pixel_mask, other=0).to(tl.int64)
    labelled = pixel_mask & (labels != ignore_index)
    in_range = (labels >= 0) & (labels < num_classes)
    valid = labelled & in_range
    target = tl.where(valid, labels, 0).to(tl.int32)
    valid_f = valid.to(tl.float32)
    lb_delta = lb_pos - lb_neg

    if HAS_WEIGHT:
        weight_acc = tl.zeros([BLOCK_C], dtype=tl.float32)
        for c0 in range(0, num_classes, BLOCK_C):
            weight_acc += tl.load(weight_ptr + c0 + cls, mask=c0 + cls < num_classes, other=0.0)
        weight_sum = tl.sum(weight_acc, axis=0)
        weight_y = tl.load(weight_ptr + target, mask=valid, other=0.0)
    else:
        weight_sum = num_classes.to(tl.float32)
        weight_y = valid_f
    sum_c = valid_f * lb_neg * weight_sum + lb_delta * weight_y

    x_ptrs = x_row + inner[:, None] * x_stride3
    g_ptrs = g_row + inner[:, None] * g_stride3
    row_max = tl.full([BLOCK_P], float("-inf"), tl.float32)
    sum_exp = tl.zeros([BLOCK_P], dtype=tl.float32)
    if SINGLE_PASS:
        num_chunks = 1  # all classes in one chunk: max and sum of exp come with the only read
    else:  # first read: online max and sum of exp over class chunks
        for c0 in range(0, num_classes, BLOCK_C):
            class_mask = c0 + cls < num_classes
            x = tl.load(
                x_ptrs + (c0 + cls)[None, :] * x_stride_c,
                mask=pixel_mask[:, None] & class_mask[None, :],
                other=0.0,
            ).to(tl.float32)
            x = tl.where(class_mask[None, :], x, float("-inf"))
            new_max = tl.maximum(row_max, tl.max(x, axis=1))
            sum_exp = sum_exp * tl.exp(row_max - new_max) + tl.sum(
                tl.exp(x - new_max[:, None]), axis=1
            )
            row_max = new_max
        num_chunks = tl.cdiv(num_classes, BLOCK_C)

    # (Second) read: the gradient, and Σ_k c_k (x_k - max) as its label and lb_neg terms.
    shifted_y = tl.zeros([BLOCK_P], dtype=tl.float32)
    weighted_shifted = tl.zeros([BLOCK_P], dtype=tl.float32)
    for chunk in range(0, num_chunks):
        c0 = chunk * BLOCK_C
        class_mask = c0 + cls < num_classes
        mask = pixel_mask[:, None] & class_mask[None, :]
        x = tl.load(x_ptrs + (c0 + cls)[None, :] * x_stride_c, mask=mask, other=0.0)
        x = tl.where(class_mask[None, :], x.to(tl.float32), float("-inf"))
        if SINGLE_PASS:
            row_max = tl.max(x, axis=1)
            exp_shifted = tl.exp(x - row_max[:, None])
            sum_exp = tl.sum(exp_shifted, axis=1)
        else:
            exp_shifted = tl.exp(x - row_max[:, None])
        shifted = tl.where(class_mask[None, :], x - row_max[:, None], 0.0)
        is_target = (c0 + cls)[None, :] == target[:, None]
        shifted_y += tl.sum(tl.where(is_target, shifted, 0.0), axis=1)
        if HAS_WEIGHT:
            class_weight = tl.load(weight_ptr + c0 + cls, mask=class_mask, other=0.0)
            weighted_shifted += tl.sum(shifted * class_weight[None, :], axis=1)
        else:
            class_weight = tl.full([BLOCK_C], 1.0, tl.float32)
            weighted_shifted += tl.sum(shifted, axis=1)
        if WRITE_GRAD:
            # dloss/dx_k = sum_c * p_k - c_k, c_k = w_k (lb_neg + lb_delta [k == y])
            grad = (sum_c / sum_exp)[:, None] * exp_shifted
            grad -= (lb_neg * valid_f)[:, None] * class_weight[None, :]
            grad -= tl.where(is_target, (lb_delta * weight_y)[:, None], 0.0)
            g_out = g_ptrs + (c0 + cls)[None, :] * g_stride_c
            tl.store(g_out, grad.to(grad_ptr.dtype.element_ty), mask=mask)

    log_sum_exp = tl.log(tl.where(pixel_mask, sum_exp, 1.0))
    sum_cx = lb_delta * weight_y * shifted_y + lb_neg * valid_f * weighted_shifted
    loss = tl.where(valid, sum_c * log_sum_exp - sum_cx, 0.0)
    if WRITE_LOSS:
        o_row = loss_ptr + o0 * o_stride0 + o1 * o_stride1 + o2 * o_stride2
        tl.store(o_row + inner * o_stride3, loss, mask=pixel_mask)
    num_programs = tl.num_programs(0)
    tl.store(partials_ptr + pid, tl.sum(loss, axis=0))
    tl.store(partials_ptr + num_programs + pid, tl.sum(weight_y, axis=0))
    num_bad = tl.sum((labelled & ~in_range).to(tl.float32), axis=0)
    tl.store(partials_ptr + 2 * num_programs + pid, num_bad)


def _merge_pixel_dims(
    sizes: list[int], stride_sets: list[list[int]]
) -> list[tuple[int, list[int]]]:
    """(size, strides per tensor) of the pixel dims, outer to inner, merging adjacent dims.

    Two neighbours merge when every tensor steps through them as one dim; size-1 dims go.
    """
    merged: list[tuple[int, list[int]]] = []
    for index in reversed(range(len(sizes))):
        strides = [stride_set[index] for stride_set in stride_sets]
        if sizes[index] == 1:
            continue
        if merged:
            inner_size, inner_strides = merged[-1]
            if all(s == i * inner_size for s, i in zip(strides, inner_strides, strict=True)):
                merged[-1] = (inner_size * sizes[index], inner_strides)
                continue
        merged.append((sizes[index], strides))
    merged.reverse()
    return merged


def _pixel_strides(tensor: torch.Tensor | None, class_dim: bool, ndim: int) -> list[int]:
    """Strides of the pixel dims (the class dim left out); zeros for an absent tensor."""
    if tensor is None:
        return [0] * ndim
    strides = list(tensor.stride())
    return [strides[0], *strides[2:]] if class_dim else strides


def _span(tensor: torch.Tensor) -> int:
    """Largest element offset a tensor's view reaches."""
    return sum(
        (size - 1) * abs(stride) for size, stride in zip(tensor.shape, tensor.stride(), strict=True)
    )


def _pixel_dims(logits, labels, grad, loss_map) -> list[tuple[int, list[int]]]:
    """Merged pixel dims of all four tensors (absent ones do not constrain the merge)."""
    sizes = [logits.shape[0], *logits.shape[2:]]
    stride_sets = [
        _pixel_strides(logits, True, len(sizes)),
        _pixel_strides(labels, False, len(sizes)),
        _pixel_strides(grad, True, len(sizes)),
        _pixel_strides(loss_map, False, len(sizes)),
    ]
    return _merge_pixel_dims(sizes, stride_sets)


def kernel_arguments(
    logits: torch.Tensor,
    labels: torch.Tensor,
    options: LossOptions,
    grad: torch.Tensor | None,
    loss_map: torch.Tensor | None,
) -> tuple[torch.Tensor, dict, dict]:
    """Partials buffer (3, programs): loss, valid weight, bad labels; kernel args and meta."""
    dims = _pixel_dims(logits, labels, grad, loss_map)
    dims = [(1, [0, 0, 0, 0])] * (MAX_PIXEL_DIMS - len(dims)) + dims
    (size0, s0), (size1, s1), (size2, s2), (size3, s3) = dims
    single_pass, block_c = class_blocks(logits, MAX_BLOCK_C)
    tile = TILE if single_pass else LOOP_TILE
    block_p = min(max(tile // block_c, 1), max(16, triton.next_power_of_2(size3)))
    num_inner_blocks = triton.cdiv(size3, block_p)
    num_programs = num_inner_blocks * size0 * size1 * size2 if labels.numel() else 0
    partials = torch.empty(3, num_programs, dtype=torch.float32, device=logits.device)
    present = [t for t in (logits, labels, grad, loss_map) if t is not None]
    reach = max(_span(t) + (block_p + block_c) * max(t.stride(), default=0) for t in present)
    arguments = loss_arguments(logits, labels, options)
    arguments |= dict(
        grad_ptr=logits if grad is None else grad, partials_ptr=partials,
        loss_ptr=partials if loss_map is None else loss_map,
        size1=size1, size2=size2, size3=size3, num_inner_blocks=num_inner_blocks,
        x_stride_c=logits.stride(1), g_stride_c=0 if grad is None else grad.stride(1),
    )  # fmt: skip
    for prefix, index in (("x", 0), ("y", 1), ("g", 2), ("o", 3)):
        for dim, strides in enumerate((s0, s1, s2, s3)):
            arguments[f"{prefix}_stride{dim}"] = strides[index]
    meta = block_meta(block_p, block_c, single_pass, options)
    meta |= dict(
        WRITE_GRAD=grad is not None, WRITE_LOSS=loss_map is not None,
        INDEX64=reach >= INDEX64_FROM, num_warps=NUM_WARPS if single_pass else 4,
    )  # fmt: skip
    return partials, arguments, meta


def forward_with_grad(
    logits: torch.Tensor,
    labels: torch.Tensor,
    options: LossOptions,
    need_grad: bool,
    inplace: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Loss (float32), the gradient without the reduction's scale, and that scale ('mean')."""
    options = kernel_weight(options, logits.device)
    loss_map = None
    if options.reduction == "none":
        loss_map = torch.empty(labels.shape, dtype=torch.float32, device=logits.device)
    grad = None
    if need_grad:
        grad = logits if inplace else torch.empty_like(logits)
    if len(_pixel_dims(logits, labels, grad, loss_map)) > MAX_PIXEL_DIMS:
        # more than three spatial dims that no stride pattern merges: read dense copies
        logits, labels = logits.contiguous(), labels.contiguous()
        grad = None if grad is None else torch.empty_like(logits)
    partials, arguments, meta = kernel_arguments(logits, labels, options, grad, loss_map)
    launch(_label_smooth_ce_kernel, partials.shape[1], logits.device, arguments, meta)
    loss, scale = reduce_partials(partials, options, labels, logits.shape[1])
    return (loss_map if loss is None else loss), grad, scale


class TritonLabelSmoothCEFunction(torch.autograd.Function):
    """Autograd wrapper: saves the forward-computed gradient, the 'mean' scale and the labels."""

    @staticmethod
    def forward(ctx, logits, labels, options, inplace):
        need_grad = ctx.needs_input_grad[0]
        with torch.autocast(logits.device.type, enabled=False):
            loss, grad, scale = forward_with_grad(logits, labels, options, need_grad, inplace)
        ctx.reduction = options.reduction
        if grad is not None:
            overwritten = grad is logits
            if overwritten and not logits.is_inference():
                # Autograd now sees the write: a graph node that saved the logits raises.
                torch.autograd.graph.increment_version(logits)
                grad = logits.detach()
            ctx.save_for_backward(grad, scale, labels)
            remember_logits(ctx, None if overwritten else logits, options)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grad, scale, labels = ctx.saved_tensors
        nones = (None,) * 3
        if torch.is_grad_enabled():  # create_graph=True: the gradient must be differentiable
            return differentiable_grad(ctx, labels, grad_output), *nones
        if ctx.reduction == "none":
            factor = grad_output.unsqueeze(1)
        elif scale is not None:
            factor = grad_output * scale
        else:
            factor = grad_output
        return scale_saved_grad(grad, factor), *nones


def label_smooth_ce(
    logits: torch.Tensor, labels: torch.Tensor, options: LossOptions, inplace: bool
) -> torch.Tensor:
    """The loss through the Triton kernel; arguments already checked by ``functional``."""
    check_device(logits)
    if inplace and any(
        s == 0 and n > 1 for s, n in zip(logits.stride(), logits.shape, strict=True)
    ):
        raise ValueError(
            f"inplace=True needs logits whose elements do not share memory; got strides "
            f"{logits.stride()} for shape {tuple(logits.shape)} (an expanded tensor). "
            "Pass inplace=False"
        )
    return TritonLabelSmoothCEFunction.apply(logits, labels, options, inplace)


def check_device(logits: torch.Tensor) -> None:
    """The Triton kernels take CUDA tensors, or CPU tensors under Triton's interpreter."""
    if not (logits.is_cuda or (INTERPRETED and logits.device.type == "cpu")):
        raise ValueError(
            f"backend='triton' needs CUDA tensors; got logits on {logits.device}. Use "
            "backend='torch' or 'auto' here (to test the kernel on CPU, set TRITON_INTERPRET=1 "
            "before triton is first imported)"
        )
