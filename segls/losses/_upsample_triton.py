"""Triton backend of the upsampling loss: two kernels, no full-resolution buffer, no atomics.

The forward kernel takes a block of output pixels along one output row, interpolates their C
logits from the four low-resolution neighbours (the taps of ``_interpolation.linear_taps``, the same
products and sums as ``F.interpolate``), and writes each pixel's log-sum-exp, its loss (for
``reduction='none'``) and per-program partial sums: loss, valid weight, bad labels.

The gradient kernel runs in backward. Each program owns a block of low-resolution pixels of
one row and a chunk of classes, and visits the output pixels whose taps reach them (the
``support_taps``), in a fixed order: it interpolates their logits again, forms
``sum_c·softmax − c`` from the saved log-sum-exp, and sums it with the interpolation weight
and the upstream gradient. Every low-resolution gradient element is written by exactly one
program, so the result is deterministic.

Host syncs: the copy of new interpolation tables to the device (once per size pair) and, with
``check_labels``, reading the bad-label count. Labels outside [0, C) count as ignored.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import triton
import triton.language as tl

from segls.losses import _triton_launch as shared
from segls.losses._composite import differentiable_grad, is_batched
from segls.losses._interpolation import linear_taps, remember_inputs, support_taps
from segls.losses.options import LossOptions

MAX_BLOCK_C = 256  # classes held in registers per pixel; more take two reads (forward)
TILE = 2048  # logits per program in the forward kernel
GRAD_BLOCK_P = 16  # low-resolution columns per gradient program (tl.dot needs >= 16)
GRAD_BLOCK_X = 32  # output columns per step of the gradient kernel's width adjoint
GRAD_MAX_BLOCK_C = 64  # classes per gradient program; more are split across programs
NUM_WARPS = 4
CPU = torch.device("cpu")


@triton.jit
def _interpolate(base, classes, row0, row1, col0, col1, row_w0, row_w1, col_w0, col_w1, mask):
    """Bilinear logits [pixels, classes]: along each row, then across, as F.interpolate sums."""
    top0 = tl.load(base + (row0 + col0)[:, None] + classes, mask=mask, other=0.0).to(tl.float32)
    top1 = tl.load(base + (row0 + col1)[:, None] + classes, mask=mask, other=0.0).to(tl.float32)
    low0 = tl.load(base + (row1 + col0)[:, None] + classes, mask=mask, other=0.0).to(tl.float32)
    low1 = tl.load(base + (row1 + col1)[:, None] + classes, mask=mask, other=0.0).to(tl.float32)
    top = col_w0[:, None] * top0 + col_w1[:, None] * top1
    low = col_w0[:, None] * low0 + col_w1[:, None] * low1
    return row_w0 * top + row_w1 * low


@triton.jit
def _class_chunk(base, c0, cls, num_classes, pixel_mask, x_stride_c, row0, row1, col0, col1,
                 row_w0, row_w1, col_w0, col_w1):  # fmt: skip
    """Interpolated logits of classes c0 + cls (−inf past C), the load mask, the class mask."""
    class_mask = c0 + cls < num_classes
    mask = pixel_mask[:, None] & class_mask[None, :]
    classes = ((c0 + cls).to(tl.int64) * x_stride_c)[None, :]
    z = _interpolate(base, classes, row0, row1, col0, col1, row_w0, row_w1, col_w0, col_w1, mask)
    return tl.where(class_mask[None, :], z, float("-inf")), mask, class_mask


@triton.jit
def _loss_parts(z, row_max, log_sum_exp, mask, classes, target, weight_ptr, class_mask,
                HAS_WEIGHT: tl.constexpr):  # fmt: skip
    """−log softmax of these classes summed at the label, and weighted over all of them."""
    neg_log_p = tl.where(mask, log_sum_exp[:, None] - (z - row_max[:, None]), 0.0)
    is_target = classes[None, :] == target[:, None]
    nll_y = tl.sum(tl.where(is_target, neg_log_p, 0.0), axis=1)
    if HAS_WEIGHT:
        class_weight = tl.load(weight_ptr + classes, mask=class_mask, other=0.0)
        return nll_y, tl.sum(neg_log_p * class_weight[None, :], axis=1)
    return nll_y, tl.sum(neg_log_p, axis=1)


@triton.jit
def _targets(labels, pixel_mask, weight_ptr, num_classes, ignore_index, lb_pos, lb_neg,
             weight_sum, HAS_WEIGHT: tl.constexpr):  # fmt: skip
    """Per pixel: valid, target class, its weight, Σ_k c_k, and whether the label is bad."""
    labelled = pixel_mask & (labels != ignore_index)
    in_range = (labels >= 0) & (labels < num_classes)
    valid = labelled & in_range
    target = tl.where(valid, labels, 0).to(tl.int32)
    valid_f = valid.to(tl.float32)
    if HAS_WEIGHT:
        weight_y = tl.load(weight_ptr + target, mask=valid, other=0.0)
    else:
        weight_y = valid_f
    sum_c = valid_f * lb_neg * weight_sum + (lb_pos - lb_neg) * weight_y
    return valid, target, weight_y, sum_c, labelled & ~in_range


@triton.jit
def _weight_sum(weight_ptr, num_classes, BLOCK_C: tl.constexpr, HAS_WEIGHT: tl.constexpr):
    """Σ_k w_k (C without class weights)."""
    if HAS_WEIGHT:
        acc = tl.zeros([BLOCK_C], dtype=tl.float32)
        cls = tl.arange(0, BLOCK_C)
        for c0 in range(0, num_classes, BLOCK_C):
            acc += tl.load(weight_ptr + c0 + cls, mask=c0 + cls < num_classes, other=0.0)
        return tl.sum(acc, axis=0)
    return num_classes.to(tl.float32)


@triton.jit
def _column_taps(col_index_ptr, col_weight_ptr, cols, out_width, mask):
    """Source columns (two) and their weights for output columns ``cols``."""
    index0 = tl.load(col_index_ptr + cols, mask=mask, other=0).to(tl.int64)
    index1 = tl.load(col_index_ptr + out_width + cols, mask=mask, other=0).to(tl.int64)
    weight0 = tl.load(col_weight_ptr + cols, mask=mask, other=0.0)
    weight1 = tl.load(col_weight_ptr + out_width + cols, mask=mask, other=0.0)
    return index0, index1, weight0, weight1


@triton.jit
def _upsample_ce_forward_kernel(
    logits_ptr, labels_ptr, weight_ptr, lse_ptr, loss_ptr, partials_ptr,
    row_index_ptr, row_weight_ptr, col_index_ptr, col_weight_ptr,
    num_classes, ignore_index, lb_pos, lb_neg, out_height, out_width, num_col_blocks,
    x_stride_n, x_stride_c, x_stride_h, x_stride_w, y_stride_n, y_stride_h, y_stride_w,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, SINGLE_PASS: tl.constexpr,
    HAS_WEIGHT: tl.constexpr, WRITE_LSE: tl.constexpr, WRITE_LOSS: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    col_block = pid % num_col_blocks
    row = (pid // num_col_blocks) % out_height
    image = (pid // num_col_blocks // out_height).to(tl.int64)
    cols = col_block * BLOCK_P + tl.arange(0, BLOCK_P)
    pixel_mask = cols < out_width
    cls = tl.arange(0, BLOCK_C)

    row0 = tl.load(row_index_ptr + row).to(tl.int64) * x_stride_h
    row1 = tl.load(row_index_ptr + out_height + row).to(tl.int64) * x_stride_h
    row_w0 = tl.load(row_weight_ptr + row)
    row_w1 = tl.load(row_weight_ptr + out_height + row)
    col0, col1, col_w0, col_w1 = _column_taps(
        col_index_ptr, col_weight_ptr, cols, out_width, pixel_mask
    )
    col0, col1 = col0 * x_stride_w, col1 * x_stride_w
    base = logits_ptr + image * x_stride_n

    pixel = image * y_stride_n + row.to(tl.int64) * y_stride_h + cols.to(tl.int64) * y_stride_w
    labels = tl.load(labels_ptr + pixel, mask=pixel_mask, other=0).to(tl.int64)
    weight_sum = _weight_sum(weight_ptr, num_classes, BLOCK_C, HAS_WEIGHT)
    valid, target, weight_y, sum_c, bad = _targets(
        labels, pixel_mask, weight_ptr, num_classes, ignore_index, lb_pos, lb_neg, weight_sum,
        HAS_WEIGHT,
    )  # fmt: skip

    if SINGLE_PASS:  # all classes in registers: one read of the four neighbours
        z, mask, class_mask = _class_chunk(base, 0, cls, num_classes, pixel_mask, x_stride_c,
                                           row0, row1, col0, col1, row_w0, row_w1, col_w0,
                                           col_w1)  # fmt: skip
        row_max = tl.max(z, axis=1)
        log_sum_exp = tl.log(tl.sum(tl.exp(z - row_max[:, None]), axis=1))
        nll_y, smooth = _loss_parts(
            z, row_max, log_sum_exp, mask, cls, target, weight_ptr, class_mask, HAS_WEIGHT
        )
    else:  # online max and sum of exp over class chunks, then a second read for the loss
        row_max = tl.full([BLOCK_P], float("-inf"), tl.float32)
        sum_exp = tl.zeros([BLOCK_P], dtype=tl.float32)
        for c0 in range(0, num_classes, BLOCK_C):
            z, mask, class_mask = _class_chunk(base, c0, cls, num_classes, pixel_mask,
                                               x_stride_c, row0, row1, col0, col1, row_w0,
                                               row_w1, col_w0, col_w1)  # fmt: skip
            new_max = tl.maximum(row_max, tl.max(z, axis=1))
            sum_exp = sum_exp * tl.exp(row_max - new_max) + tl.sum(
                tl.exp(z - new_max[:, None]), axis=1
            )
            row_max = new_max
        log_sum_exp = tl.log(sum_exp)
        nll_y = tl.zeros([BLOCK_P], dtype=tl.float32)
        smooth = tl.zeros([BLOCK_P], dtype=tl.float32)
        for c0 in range(0, num_classes, BLOCK_C):
            z, mask, class_mask = _class_chunk(base, c0, cls, num_classes, pixel_mask,
                                               x_stride_c, row0, row1, col0, col1, row_w0,
                                               row_w1, col_w0, col_w1)  # fmt: skip
            chunk_nll_y, chunk_smooth = _loss_parts(
                z, row_max, log_sum_exp, mask, c0 + cls, target, weight_ptr, class_mask,
                HAS_WEIGHT,
            )  # fmt: skip
            nll_y += chunk_nll_y
            smooth += chunk_smooth
    # Σ_k c_k (lse − z_k), c_k = w_k (lb_neg + Δ [k == y]): every term >= 0, nothing cancels
    lse = row_max + log_sum_exp
    loss = (lb_pos - lb_neg) * weight_y * nll_y + lb_neg * valid.to(tl.float32) * smooth
    loss = tl.where(valid, loss, 0.0)

    out_pixel = (image * out_height + row) * out_width + cols
    if WRITE_LSE:
        tl.store(lse_ptr + out_pixel, lse, mask=pixel_mask)
    if WRITE_LOSS:
        tl.store(loss_ptr + out_pixel, loss, mask=pixel_mask)
    num_programs = tl.num_programs(0)
    tl.store(partials_ptr + pid, tl.sum(loss, axis=0))
    tl.store(partials_ptr + num_programs + pid, tl.sum(weight_y, axis=0))
    tl.store(partials_ptr + 2 * num_programs + pid, tl.sum(bad.to(tl.float32), axis=0))


@triton.jit
def _upsample_ce_grad_kernel(
    logits_ptr, labels_ptr, weight_ptr, lse_ptr, factor_ptr, grad_ptr,
    row_index_ptr, row_weight_ptr, col_index_ptr, col_weight_ptr,
    row_support_ptr, row_support_weight_ptr, col_span_ptr,
    num_classes, ignore_index, lb_pos, lb_neg, in_height, in_width, out_height, out_width,
    row_support, num_col_blocks, num_class_blocks,
    x_stride_n, x_stride_c, x_stride_h, x_stride_w, y_stride_n, y_stride_h, y_stride_w,
    f_stride_n, f_stride_h, f_stride_w, g_stride_n, g_stride_c, g_stride_h, g_stride_w,
    BLOCK_P: tl.constexpr, BLOCK_X: tl.constexpr, BLOCK_C: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    class_block = pid % num_class_blocks
    rest = pid // num_class_blocks
    col_block = rest % num_col_blocks
    low_row = (rest // num_col_blocks) % in_height
    image = (rest // num_col_blocks // in_height).to(tl.int64)
    low_cols = col_block * BLOCK_P + tl.arange(0, BLOCK_P)
    low_mask = low_cols < in_width
    cls = class_block * BLOCK_C + tl.arange(0, BLOCK_C)
    class_mask = cls < num_classes
    classes = (cls.to(tl.int64) * x_stride_c)[None, :]
    if HAS_WEIGHT:
        class_weight = tl.load(weight_ptr + cls, mask=class_mask, other=0.0)
    else:
        class_weight = tl.full([BLOCK_C], 1.0, tl.float32)
    weight_sum = _weight_sum(weight_ptr, num_classes, BLOCK_C, HAS_WEIGHT)
    base = logits_ptr + image * x_stride_n
    span_start = tl.load(col_span_ptr + 2 * col_block)
    span_end = tl.load(col_span_ptr + 2 * col_block + 1)
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)

    for ky in range(0, row_support):  # output rows that read low_row, in order
        row = tl.load(row_support_ptr + low_row * row_support + ky).to(tl.int64)
        row_share = tl.load(row_support_weight_ptr + low_row * row_support + ky)
        if row_share != 0.0:
            row0 = tl.load(row_index_ptr + row).to(tl.int64) * x_stride_h
            row1 = tl.load(row_index_ptr + out_height + row).to(tl.int64) * x_stride_h
            row_w0 = tl.load(row_weight_ptr + row)
            row_w1 = tl.load(row_weight_ptr + out_height + row)
            for x_start in range(span_start, span_end, BLOCK_X):  # output columns that read us
                cols = (x_start + tl.arange(0, BLOCK_X)).to(tl.int64)
                pixel_mask = cols < span_end
                col_index0, col_index1, col_w0, col_w1 = _column_taps(
                    col_index_ptr, col_weight_ptr, cols, out_width, pixel_mask
                )
                pixel = image * y_stride_n + row * y_stride_h + cols * y_stride_w
                labels = tl.load(labels_ptr + pixel, mask=pixel_mask, other=0).to(tl.int64)
                valid, target, weight_y, sum_c, _ = _targets(
                    labels, pixel_mask, weight_ptr, num_classes, ignore_index, lb_pos, lb_neg,
                    weight_sum, HAS_WEIGHT,
                )  # fmt: skip
                out_pixel = (image * out_height + row) * out_width + cols
                lse = tl.load(lse_ptr + out_pixel, mask=pixel_mask, other=0.0)
                factor = tl.load(
                    factor_ptr + image * f_stride_n + row * f_stride_h + cols * f_stride_w,
                    mask=pixel_mask,
                    other=0.0,
                )
                mask = pixel_mask[:, None] & class_mask[None, :]
                z = _interpolate(base, classes, row0, row1, col_index0 * x_stride_w,
                                 col_index1 * x_stride_w, row_w0, row_w1, col_w0, col_w1,
                                 mask)  # fmt: skip
                # dloss/dz_k = sum_c · softmax_k − c_k,  c_k = w_k (lb_neg + Δ [k == y])
                grad = sum_c[:, None] * tl.exp(z - lse[:, None])
                grad -= (lb_neg * valid.to(tl.float32))[:, None] * class_weight[None, :]
                is_target = cls[None, :] == target[:, None]
                grad -= tl.where(is_target, ((lb_pos - lb_neg) * weight_y)[:, None], 0.0)
                grad = tl.where(mask, grad * (row_share * factor)[:, None], 0.0)
                # the width adjoint: each output column gives w0 to index0 and w1 to index1
                spread = tl.where(col_index0[None, :] == low_cols[:, None], col_w0[None, :], 0.0)
                spread += tl.where(col_index1[None, :] == low_cols[:, None], col_w1[None, :], 0.0)
                acc += tl.dot(spread, grad, input_precision="ieee")

    out = grad_ptr + image * g_stride_n + low_row.to(tl.int64) * g_stride_h
    out += low_cols.to(tl.int64)[:, None] * g_stride_w + cls.to(tl.int64)[None, :] * g_stride_c
    tl.store(out, acc.to(grad_ptr.dtype.element_ty), mask=low_mask[:, None] & class_mask[None, :])


@lru_cache(maxsize=64)
def _tables(in_size: int, out_size: int, align_corners: bool, device: torch.device):
    """Taps (2, out) int32 + float32 and their adjoint (in, K) int32 + float32, on the device."""
    index0, index1, weight0, weight1 = linear_taps(
        in_size, out_size, align_corners, torch.float32, CPU
    )
    support_index, support_weight = support_taps(in_size, out_size, align_corners, CPU)
    tables = (
        torch.stack([index0, index1]).int(),
        torch.stack([weight0, weight1]),
        support_index.int(),
        support_weight,
    )
    return tuple(t.to(device) for t in tables)


@lru_cache(maxsize=64)
def _column_spans(in_size, out_size, align_corners, block, device) -> torch.Tensor:
    """Per block of ``block`` source columns: [first, end) of the output columns reading it."""
    index0, index1 = linear_taps(in_size, out_size, align_corners, torch.float32, CPU)[:2]
    block_first = torch.arange(0, in_size, block)
    block_last = (block_first + block - 1).clamp_max(in_size - 1)
    first = torch.searchsorted(index1, block_first, side="left")
    end = torch.searchsorted(index0, block_last, side="right")
    return torch.stack([first, end], dim=1).int().to(device)


def _tap_arguments(rows: tuple, cols: tuple) -> dict:
    """The kernel parameters that carry the row and column taps."""
    return dict(
        row_index_ptr=rows[0], row_weight_ptr=rows[1], col_index_ptr=cols[0], col_weight_ptr=cols[1]
    )


def _strides(prefix: str, tensor: torch.Tensor, dims: str) -> dict:
    """``{prefix}_stride_{dim}`` for each dim letter of `dims` (``"nchw"``)."""
    return {
        f"{prefix}_stride_{dim}": stride for dim, stride in zip(dims, tensor.stride(), strict=True)
    }


def forward_arguments(logits, labels, options: LossOptions, align_corners, need_lse):
    """Buffers (partials (3, programs), log-sum-exp, loss map), kernel args and meta."""
    batch, _, in_height, in_width = logits.shape
    out_height, out_width = labels.shape[1:]
    rows = _tables(in_height, out_height, align_corners, logits.device)
    cols = _tables(in_width, out_width, align_corners, logits.device)
    single_pass, block_c = shared.class_blocks(logits, MAX_BLOCK_C)
    block_p = min(max(TILE // block_c, 1), max(16, triton.next_power_of_2(out_width)))
    num_col_blocks = triton.cdiv(out_width, block_p)
    num_programs = batch * out_height * num_col_blocks
    pixels = (batch, out_height, out_width)
    partials = torch.empty(3, num_programs, dtype=torch.float32, device=logits.device)
    lse = torch.empty(pixels, dtype=torch.float32, device=logits.device) if need_lse else None
    loss_map = None
    if options.reduction == "none":
        loss_map = torch.empty(pixels, dtype=torch.float32, device=logits.device)
    arguments = shared.loss_arguments(logits, labels, options) | _tap_arguments(rows, cols)
    arguments |= dict(
        lse_ptr=partials if lse is None else lse, partials_ptr=partials,
        loss_ptr=partials if loss_map is None else loss_map,
        out_height=out_height, out_width=out_width, num_col_blocks=num_col_blocks,
    )  # fmt: skip
    arguments |= _strides("x", logits, "nchw") | _strides("y", labels, "nhw")
    meta = shared.block_meta(block_p, block_c, single_pass, options)
    meta |= dict(WRITE_LSE=lse is not None, WRITE_LOSS=loss_map is not None, num_warps=NUM_WARPS)
    return (partials, lse, loss_map), arguments, meta


def forward(logits, labels, options: LossOptions, align_corners, need_lse):
    """Loss (float32), per-pixel log-sum-exp (or None) and the 'mean' scale (or None)."""
    (partials, lse, loss_map), arguments, meta = forward_arguments(
        logits, labels, options, align_corners, need_lse
    )
    shared.launch(_upsample_ce_forward_kernel, partials.shape[1], logits.device, arguments, meta)
    loss, scale = shared.reduce_partials(partials, options, labels, logits.shape[1])
    return (loss_map if loss is None else loss), lse, scale


def gradient_arguments(logits, labels, lse, factor, options: LossOptions, align_corners):
    """The gradient buffer, the number of programs, kernel args and meta."""
    batch, num_classes, in_height, in_width = logits.shape
    out_height, out_width = labels.shape[1:]
    rows = _tables(in_height, out_height, align_corners, logits.device)
    cols = _tables(in_width, out_width, align_corners, logits.device)
    spans = _column_spans(in_width, out_width, align_corners, GRAD_BLOCK_P, logits.device)
    grad = torch.empty_like(logits)
    block_c = min(max(triton.next_power_of_2(num_classes), 16), GRAD_MAX_BLOCK_C)
    num_col_blocks = triton.cdiv(in_width, GRAD_BLOCK_P)
    num_class_blocks = triton.cdiv(num_classes, block_c)
    num_programs = batch * in_height * num_col_blocks * num_class_blocks
    arguments = shared.loss_arguments(logits, labels, options) | _tap_arguments(rows, cols)
    arguments |= dict(
        lse_ptr=lse, factor_ptr=factor, grad_ptr=grad, col_span_ptr=spans,
        row_support_ptr=rows[2], row_support_weight_ptr=rows[3], row_support=rows[2].shape[1],
        in_height=in_height, in_width=in_width, out_height=out_height, out_width=out_width,
        num_col_blocks=num_col_blocks, num_class_blocks=num_class_blocks,
    )  # fmt: skip
    for prefix, tensor, dims in (("x", logits, "nchw"), ("y", labels, "nhw"),
                                 ("f", factor, "nhw"), ("g", grad, "nchw")):  # fmt: skip
        arguments |= _strides(prefix, tensor, dims)
    has_weight = options.weight is not None
    meta = dict(BLOCK_P=GRAD_BLOCK_P, BLOCK_X=GRAD_BLOCK_X, BLOCK_C=block_c, HAS_WEIGHT=has_weight)
    meta["num_warps"] = NUM_WARPS
    return grad, num_programs, arguments, meta


def gradient(logits, labels, lse, factor, options: LossOptions, align_corners) -> torch.Tensor:
    """Low-resolution gradient; ``factor`` (N, H, W), maybe expanded, scales each pixel's part."""
    grad, num_programs, arguments, meta = gradient_arguments(
        logits, labels, lse, factor, options, align_corners
    )
    shared.launch(_upsample_ce_grad_kernel, num_programs, logits.device, arguments, meta)
    return grad


class TritonUpsampleCEFunction(torch.autograd.Function):
    """Autograd wrapper: saves the inputs and the per-pixel log-sum-exp; backward runs the
    gradient kernel with the upstream gradient."""

    @staticmethod
    def forward(ctx, logits, labels, options, align_corners):
        options = shared.kernel_weight(options, logits.device)
        with torch.autocast(logits.device.type, enabled=False):
            loss, lse, scale = forward(
                logits, labels, options, align_corners, ctx.needs_input_grad[0]
            )
        ctx.options, ctx.align_corners = options, align_corners
        ctx.save_for_backward(logits, labels, lse, scale)
        remember_inputs(ctx, logits, options, align_corners)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        logits, labels, lse, scale = ctx.saved_tensors
        options, align_corners = ctx.options, ctx.align_corners
        if torch.is_grad_enabled() or is_batched(grad_output):
            # create_graph=True, or one upstream gradient per vmapped batch: the composite form
            return differentiable_grad(ctx, labels, grad_output, ctx.loss_fn), None, None, None
        if options.reduction == "none":
            factor = grad_output.float()
        else:
            factor = (grad_output if scale is None else grad_output * scale).float()
            factor = factor.reshape(1, 1, 1).expand(labels.shape)  # strides 0: one value
        with torch.autocast(logits.device.type, enabled=False):
            grad = gradient(logits, labels, lse, factor, options, align_corners)
        return grad, None, None, None
