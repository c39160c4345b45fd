"""The Triton kernels of the upsampling loss, run on the CPU by Triton's interpreter.

Kernel tests are marked triton_child: they run in the one child pytest process started with
TRITON_INTERPRET=1 by tests/test_losses_triton.py (tests/conftest.py deselects them here, and
tests/triton_helpers.py finds this file); golden values come from
``F.interpolate`` + ``F.cross_entropy`` (or an explicit target) in float64.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_losses_triton import in_kernel_order
from test_losses_upsample import composite, make_case

from benchmarks.reference import GRAD_TOL, IGNORE, VALUE_TOL, dense_loss
from segls.losses import LossOptions, label_smooth_softmax_ce

pytest.importorskip("triton")

in_child = pytest.mark.triton_child
in_parent = pytest.mark.triton_parent


def check(logits, labels, align_corners, reference, grad_tol=1e-5, **options):
    """Triton loss and gradient (random upstream) against ``reference`` on float64 logits."""
    x = logits.detach().requires_grad_()
    got = label_smooth_softmax_ce(
        x, labels, upsample="bilinear", align_corners=align_corners, backend="triton", **options
    )
    assert type(got.grad_fn).__name__ == "TritonUpsampleCEFunctionBackward"
    ref_in = logits.detach().double().requires_grad_()
    expected = reference(ref_in)
    torch.testing.assert_close(got.double(), expected, rtol=VALUE_TOL, atol=VALUE_TOL)
    upstream = torch.rand(expected.shape, dtype=torch.float64) + 0.5
    (grad,) = torch.autograd.grad(got, x, upstream.float())
    (expected_grad,) = torch.autograd.grad(expected, ref_in, upstream)
    assert grad.dtype == logits.dtype and grad.stride() == logits.stride()
    atol = grad_tol * expected_grad.abs().max().item() + 1e-7
    torch.testing.assert_close(grad.double(), expected_grad, rtol=0, atol=atol)
    return grad


@in_child
@pytest.mark.parametrize(
    ("align_corners", "reduction", "weighted"),
    [(False, "mean", True), (True, "sum", False), (True, "none", True)],
)
def test_equals_interpolate_then_cross_entropy(align_corners, reduction, weighted):
    logits, labels = make_case((2, 5, 4, 5), (13, 19), dtype=torch.float32)
    weight = torch.linspace(0.3, 2.0, 5) if weighted else None
    ce_weight = None if weight is None else weight.double()
    check(
        logits, labels, align_corners,
        lambda x: composite(
            x, labels, align_corners, weight=ce_weight, label_smoothing=0.1, reduction=reduction
        ),
        lb_smooth=0.1, weight=weight, reduction=reduction,
    )  # fmt: skip


@in_child
def test_lb_pos_lb_neg_against_an_explicit_target():
    logits, labels = make_case((2, 6, 3, 4), (11, 9), seed=1, dtype=torch.float32)
    weight = torch.rand(6) + 0.2
    check(
        logits, labels, True,
        lambda x: dense_loss(
            x, labels, 0.9, 0.005, weight, "sum", upsample="bilinear", align_corners=True
        ),
        lb_pos=0.9, lb_neg=0.005, weight=weight, reduction="sum",
    )  # fmt: skip


@in_child
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_channels_last(dtype):
    logits, labels = make_case((2, 7, 4, 3), (16, 12), seed=2, dtype=dtype)
    logits = logits.contiguous(memory_format=torch.channels_last)
    reference = lambda x: composite(x, labels, False, label_smoothing=0.1)  # noqa: E731
    check(logits, labels, False, reference, GRAD_TOL[dtype], lb_smooth=0.1)


@in_child
def test_class_chunks_and_column_blocks(monkeypatch):
    """Classes in chunks (forward: online softmax; gradient: several programs), many blocks."""
    from segls.losses import _upsample_triton

    monkeypatch.setattr(_upsample_triton, "MAX_BLOCK_C", 4)
    monkeypatch.setattr(_upsample_triton, "GRAD_MAX_BLOCK_C", 16)
    monkeypatch.setattr(_upsample_triton, "TILE", 64)
    logits, labels = make_case((1, 17, 2, 17), (3, 36), seed=3, dtype=torch.float32)
    logits = logits.contiguous(memory_format=torch.channels_last)
    weight = torch.rand(17) + 0.1
    check(
        logits, labels, False,
        lambda x: composite(x, labels, False, weight=weight.double(), label_smoothing=0.2),
        lb_smooth=0.2, weight=weight,
    )  # fmt: skip


@in_child
def test_labels_out_of_range_ignored_or_named():
    logits, labels = make_case((2, 4, 3, 3), (9, 9), dtype=torch.float32)
    bad = labels.clone()
    bad[0, 0, :3] = torch.tensor([4, -1, 300])
    masked = torch.where((bad < 0) | (bad >= 4), IGNORE, bad)
    check(
        logits, bad, False,
        lambda x: composite(x, masked, False, label_smoothing=0.1),
        lb_smooth=0.1, check_labels=False,
    )  # fmt: skip
    with pytest.raises(ValueError, match="labels contain -1, 4, 300 but C = 4"):
        label_smooth_softmax_ce(logits, bad, upsample="bilinear", backend="triton")


@in_child
def test_all_ignored_retain_graph_and_determinism():
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    loss = label_smooth_softmax_ce(
        logits, torch.full((2, 9, 9), IGNORE), upsample="bilinear", backend="triton"
    )
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0
    logits, labels = make_case((2, 5, 4, 4), (12, 12), dtype=torch.float32)
    logits.requires_grad_()
    loss = label_smooth_softmax_ce(logits, labels, upsample="bilinear", backend="triton") * 3
    loss.backward(retain_graph=True)
    first = logits.grad.clone()
    loss.backward()
    assert torch.equal(logits.grad, 2 * first)  # the same sums in the same order


@in_child
@settings(max_examples=8, deadline=None)
@given(
    num_classes=st.integers(2, 9),
    in_size=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    extra=st.tuples(st.integers(0, 11), st.integers(0, 11)),
    align_corners=st.booleans(),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    label_dtype=st.sampled_from([torch.int64, torch.int32, torch.uint8]),
    seed=st.integers(0, 2**16),
)
def test_property_against_the_composite(
    num_classes, in_size, extra, align_corners, reduction, label_dtype, seed
):
    size = (in_size[0] + extra[0], in_size[1] + extra[1])
    logits, labels = make_case((2, num_classes, *in_size), size, seed, dtype=torch.float32)
    check(
        logits, labels.to(label_dtype), align_corners,
        lambda x: composite(x, labels, align_corners, label_smoothing=0.1, reduction=reduction),
        lb_smooth=0.1, reduction=reduction,
    )  # fmt: skip


# ---- the parent process: no kernel launches -------------------------------------------------


@in_parent
@pytest.mark.parametrize(
    ("num_classes", "dtype", "layout", "weighted", "reduction"),
    [
        (19, torch.float32, torch.contiguous_format, False, "mean"),
        (150, torch.bfloat16, torch.channels_last, True, "none"),
        (300, torch.float16, torch.contiguous_format, True, "sum"),
    ],
)
def test_kernels_compile_for_sm90(num_classes, dtype, layout, weighted, reduction):
    """The interpreter is lenient; the real compiler (to a cubin; no GPU needed) is not."""
    from triton_helpers import compile_for_sm90

    from segls.losses import _upsample_triton

    logits, labels = make_case((2, num_classes, 16, 32), (64, 128), dtype=dtype)
    weight = torch.ones(num_classes) if weighted else None
    options = LossOptions(
        lb_pos=0.9, lb_neg=0.01, weight=weight, ignore_index=IGNORE, reduction=reduction
    )
    logits = logits.contiguous(memory_format=layout)
    (_, lse, _), args, meta = _upsample_triton.forward_arguments(
        logits, labels, options, False, True
    )
    kernels = [(_upsample_triton._upsample_ce_forward_kernel, args, meta)]
    factor = torch.ones(1, 1, 1).expand(labels.shape)
    _, _, args, meta = _upsample_triton.gradient_arguments(
        logits, labels, lse, factor, options, False
    )
    kernels.append((_upsample_triton._upsample_ce_grad_kernel, args, meta))
    for kernel, args, meta in kernels:
        compiled = compile_for_sm90(*in_kernel_order(kernel, args, meta))
        assert compiled.asm["cubin"]
        assert "ld.global" in compiled.asm["ptx"] and "st.global" in compiled.asm["ptx"]
