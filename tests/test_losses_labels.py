"""Any integer label dtype gives the result of the same values as int64 (torch and Triton).

An ``ignore_index`` that the labels' dtype cannot hold matches no pixel: compared in the narrow
dtype it would wrap (-100 is 156 as uint8, 255 is -1 as int8) and silently drop a class. The
rule holds with ``upsample='bilinear'`` too. Golden values: the same labels as int64, and
F.cross_entropy on them (after F.interpolate when upsampling).
"""

import pytest
import torch
import torch.nn.functional as F

from segls.losses import (
    LabelSmoothSoftmaxCE,
    LossOptions,
    build_criterion,
    label_smooth_softmax_ce,
    lovasz_softmax,
)

BACKENDS = [
    pytest.param("torch", marks=pytest.mark.triton_parent),
    pytest.param("triton", marks=pytest.mark.triton_child),
]


def wrapped(value: int, dtype: torch.dtype) -> int:
    """What ``value`` becomes in ``dtype`` (two's complement wrap-around)."""
    info = torch.iinfo(dtype)
    return (value - info.min) % (info.max - info.min + 1) + info.min


def make_case(dtype, num_classes, ignore_index, seed=0):
    """Logits and int64 labels in [0, C); a quarter of the pixels hold ignore_index as ``dtype``
    stores it (the index itself when it fits, else the class it wraps to)."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, num_classes, 4, 5, generator=gen) * 3
    labels = torch.randint(0, num_classes, (2, 4, 5), generator=gen)
    labels[torch.rand(labels.shape, generator=gen) < 0.25] = wrapped(ignore_index, dtype)
    return logits, labels


CASES = [
    pytest.param(torch.uint8, 200, 255, id="uint8-255-fits"),
    pytest.param(torch.uint8, 200, -100, id="uint8-minus100-wraps-to-156"),
    pytest.param(torch.uint8, 200, 256 + 3, id="uint8-259-wraps-to-3"),
    pytest.param(torch.int8, 120, 125, id="int8-125-fits"),
    pytest.param(torch.int8, 120, -100, id="int8-minus100-fits"),
    pytest.param(torch.int8, 120, 256 + 3, id="int8-259-wraps-to-3"),
    pytest.param(torch.int16, 120, 255, id="int16-255-fits"),
    pytest.param(torch.int16, 120, 2**16 + 3, id="int16-65539-wraps-to-3"),
    pytest.param(torch.int32, 120, -100, id="int32-minus100-fits"),
    pytest.param(torch.int32, 120, 2**32 + 3, id="int32-2**32+3-wraps-to-3"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("check_labels", [True, False])
@pytest.mark.parametrize(("dtype", "num_classes", "ignore_index"), CASES)
def test_narrow_labels_equal_int64_and_pytorch(
    backend, check_labels, dtype, num_classes, ignore_index
):
    logits, labels = make_case(dtype, num_classes, ignore_index)
    results = {}
    for name, these in [("narrow", labels.to(dtype)), ("int64", labels)]:
        x = logits.clone().requires_grad_()
        loss = label_smooth_softmax_ce(
            x, these, 0.1, ignore_index=ignore_index, reduction="none",
            check_labels=check_labels, backend=backend,
        )  # fmt: skip
        (grad,) = torch.autograd.grad(loss.sum(), x)
        results[name] = loss, grad
    torch.testing.assert_close(results["narrow"], results["int64"], rtol=0, atol=0)
    expected = F.cross_entropy(
        logits.double(), labels, ignore_index=ignore_index, label_smoothing=0.1, reduction="none"
    )
    torch.testing.assert_close(results["narrow"][0].double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_uint8_class_156_counts_when_ignore_index_is_minus_100(backend):
    logits, labels = make_case(torch.uint8, 200, -100, seed=1)
    assert (labels == 156).any()
    got = label_smooth_softmax_ce(
        logits, labels.to(torch.uint8), 0.1, ignore_index=-100, backend=backend
    )
    expected = F.cross_entropy(logits.double(), labels, ignore_index=-100, label_smoothing=0.1)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_int8_minus_one_is_a_bad_label_when_ignore_index_is_255(backend):
    labels = torch.zeros(2, 4, 4, dtype=torch.int8)
    labels[0, 0, :2] = -1
    with pytest.raises(ValueError, match="labels contain -1 but C = 19"):
        label_smooth_softmax_ce(torch.randn(2, 19, 4, 4), labels, backend=backend)
    with pytest.raises(ValueError, match="labels contain -1 but C = 19"):
        label_smooth_softmax_ce(torch.randn(2, 19, 4, 4), labels.long(), backend=backend)


@pytest.mark.triton_parent
def test_lovasz_narrow_labels_equal_int64():
    logits, labels = make_case(torch.uint8, 200, -100)
    narrow = lovasz_softmax(logits, labels.to(torch.uint8), ignore_index=-100)
    torch.testing.assert_close(narrow, lovasz_softmax(logits, labels, ignore_index=-100))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int8], ids=["int64", "int8"])
def test_unchecked_out_of_range_labels_count_as_ignored(backend, dtype):
    logits, labels = make_case(torch.int64, 19, 255)
    labels.view(-1)[:4] = torch.tensor([19, 100, -1, -7])
    x = logits.clone().requires_grad_()
    got = label_smooth_softmax_ce(
        x, labels.to(dtype), 0.1, reduction="sum", check_labels=False, backend=backend
    )
    (grad,) = torch.autograd.grad(got, x)
    reference_in = logits.double().requires_grad_()
    in_range = (labels >= 0) & (labels < 19)
    expected = F.cross_entropy(
        reference_in,
        torch.where(in_range, labels, 255),
        ignore_index=255,
        label_smoothing=0.1,
        reduction="sum",
    )
    expected.backward()
    torch.testing.assert_close(got.double(), expected.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.double(), reference_in.grad, rtol=0, atol=1e-6)


def interpolated_cross_entropy(logits, labels, ignore_index, reduction="mean", **options):
    """F.interpolate to the labels' size, then F.cross_entropy: the upsampling loss's reference."""
    full = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(
        full, labels, ignore_index=ignore_index, label_smoothing=0.1, reduction=reduction,
        **options,
    )  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("dtype", "num_classes", "ignore_index"), [CASES[1], CASES[3], CASES[9]])
def test_narrow_labels_with_upsampling_equal_int64_and_pytorch(
    backend, dtype, num_classes, ignore_index
):
    logits, labels = make_case(dtype, num_classes, ignore_index)
    logits = logits[:, :, ::2, ::2]  # 2×3 logits, 4×5 labels
    results = {}
    for name, these in [("narrow", labels.to(dtype)), ("int64", labels)]:
        x = logits.clone().requires_grad_()
        loss = label_smooth_softmax_ce(
            x, these, 0.1, ignore_index=ignore_index, backend=backend, upsample="bilinear"
        )
        results[name] = loss, *torch.autograd.grad(loss, x)
    torch.testing.assert_close(results["narrow"], results["int64"], rtol=0, atol=0)
    reference_in = logits.double().requires_grad_()
    expected = interpolated_cross_entropy(reference_in, labels, ignore_index)
    expected.backward()
    torch.testing.assert_close(results["narrow"][0].double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results["narrow"][1].double(), reference_in.grad, rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_int8_minus_one_is_a_bad_label_with_upsampling_too(backend):
    labels = torch.zeros(2, 8, 8, dtype=torch.int8)
    labels[0, 0, :2] = -1
    with pytest.raises(ValueError, match="labels contain -1 but C = 19"):
        label_smooth_softmax_ce(
            torch.randn(2, 19, 4, 4), labels, backend=backend, upsample="bilinear"
        )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8], ids=["int64", "uint8"])
def test_unchecked_out_of_range_labels_count_as_ignored_with_upsampling(backend, dtype):
    """Also in the mean's denominator: the loss divides by the pixels that count."""
    logits, labels = make_case(torch.int64, 19, 255)
    labels.view(-1)[:4] = torch.tensor([19, 100, 200, 254])
    x = logits[:, :, ::2, ::2].clone().requires_grad_()
    got = label_smooth_softmax_ce(
        x, labels.to(dtype), 0.1, check_labels=False, backend=backend, upsample="bilinear"
    )
    (grad,) = torch.autograd.grad(got, x)
    reference_in = x.detach().double().requires_grad_()
    in_range = torch.where(labels < 19, labels, 255)
    expected = interpolated_cross_entropy(reference_in, in_range, 255)
    expected.backward()
    torch.testing.assert_close(got.double(), expected.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.double(), reference_in.grad, rtol=0, atol=1e-6)


UNSIGNED = [
    pytest.param(torch.uint16, id="uint16"),
    pytest.param(torch.uint32, id="uint32"),
    pytest.param(torch.uint64, id="uint64"),
]


def unsigned_case(dtype, seed=0):
    """Logits, int64 labels in [0, 19) with a quarter ignored (255), and those labels as ``dtype``."""
    logits, labels = make_case(torch.int64, 19, 255, seed=seed)
    return logits, labels, labels.to(dtype)


def loss_and_grad(logits, labels, **options):
    """The loss (per pixel) and its gradient for a fresh copy of the logits."""
    x = logits.clone().requires_grad_()
    loss = label_smooth_softmax_ce(x, labels, 0.1, reduction="none", **options)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss, grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("check_labels", [True, False])
@pytest.mark.parametrize("dtype", UNSIGNED)
def test_unsigned_labels_equal_pytorch_on_int64(backend, check_labels, dtype):
    """torch.from_numpy of a 16-bit mask gives uint16, on which torch has no min/max."""
    logits, labels, unsigned = unsigned_case(dtype)
    got = loss_and_grad(logits, unsigned, backend=backend, check_labels=check_labels)
    reference_in = logits.double().requires_grad_()
    expected = F.cross_entropy(
        reference_in, labels, ignore_index=255, label_smoothing=0.1, reduction="none"
    )
    expected.sum().backward()
    torch.testing.assert_close(got[0].double(), expected.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1].double(), reference_in.grad, rtol=0, atol=1e-6)
    module = LabelSmoothSoftmaxCE(0.1, backend=backend, check_labels=check_labels)
    torch.testing.assert_close(module(logits, unsigned), module(logits, labels), rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", UNSIGNED)
def test_unsigned_labels_with_upsampling_equal_pytorch_on_int64(backend, dtype):
    logits, labels, unsigned = unsigned_case(dtype, seed=2)
    x = logits[:, :, ::2, ::2].clone().requires_grad_()
    got = label_smooth_softmax_ce(x, unsigned, 0.1, backend=backend, upsample="bilinear")
    (grad,) = torch.autograd.grad(got, x)
    reference_in = x.detach().double().requires_grad_()
    expected = interpolated_cross_entropy(reference_in, labels, 255)
    expected.backward()
    torch.testing.assert_close(got.double(), expected.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.double(), reference_in.grad, rtol=0, atol=1e-6)


@pytest.mark.triton_parent
@pytest.mark.parametrize("dtype", UNSIGNED)
def test_unsigned_labels_in_the_lovasz_term_equal_int64(dtype):
    logits, labels, unsigned = unsigned_case(dtype, seed=3)
    torch.testing.assert_close(lovasz_softmax(logits, unsigned), lovasz_softmax(logits, labels))
    objective = build_criterion(LossOptions(0.1), lovasz_weight=0.5)
    torch.testing.assert_close(objective(logits, unsigned), objective(logits, labels))
    upsampling = build_criterion(LossOptions(0.1), upsample="bilinear", lovasz_weight=0.5)
    small = logits[:, :, ::2, ::2]
    torch.testing.assert_close(upsampling(small, unsigned), upsampling(small, labels))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", UNSIGNED)
def test_unsigned_65535_is_a_bad_label_when_ignore_index_is_255(backend, dtype):
    """As for int64 labels: out of range (named, or ignored unchecked), never wrapped."""
    logits, labels, _ = unsigned_case(torch.int64, seed=4)
    labels.view(-1)[:3] = 65535
    with pytest.raises(ValueError, match="labels contain 65535 but C = 19"):
        label_smooth_softmax_ce(logits, labels.to(dtype), backend=backend)
    with pytest.raises(ValueError, match="labels contain 65535 but C = 19"):
        lovasz_softmax(logits, labels.to(dtype))
    got = label_smooth_softmax_ce(logits, labels.to(dtype), backend=backend, check_labels=False)
    expected = F.cross_entropy(
        logits.double(), torch.where(labels < 19, labels, 255), ignore_index=255,
        label_smoothing=0.1,
    )  # fmt: skip
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    labels = torch.where(labels == 255, 0, labels)
    as_index = label_smooth_softmax_ce(
        logits, labels.to(dtype), ignore_index=65535, backend=backend
    )
    expected = F.cross_entropy(logits.double(), labels, ignore_index=65535, label_smoothing=0.1)
    torch.testing.assert_close(as_index.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ignore_index", [255, -1])
def test_uint64_labels_from_2_to_the_63_are_bad_labels_never_wrapped(backend, ignore_index):
    """2**64 − 1 is −1 as int64: it must not match ignore_index=−1 nor be reported as −1."""
    logits, labels, unsigned = unsigned_case(torch.uint64, seed=5)
    unsigned.view(-1)[:2] = torch.tensor([2**64 - 1, 2**63], dtype=torch.uint64)
    message = "labels contain 9223372036854775808, 18446744073709551615 but C = 19"
    for loss in (label_smooth_softmax_ce, lovasz_softmax):
        options = {"backend": backend} if loss is label_smooth_softmax_ce else {}
        with pytest.raises(ValueError, match=message):
            loss(logits, unsigned, ignore_index=ignore_index, **options)
    got = label_smooth_softmax_ce(
        logits, unsigned, ignore_index=ignore_index, check_labels=False, backend=backend
    )
    reference = torch.where(labels == 255, ignore_index, labels)
    reference.view(-1)[:2] = ignore_index
    expected = F.cross_entropy(
        logits.double(), reference, ignore_index=ignore_index, label_smoothing=0.1
    )
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
