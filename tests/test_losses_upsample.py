"""The loss with bilinear upsampling fused in (torch backend) against PyTorch's composite.

Golden values come from ``F.interpolate(..., mode='bilinear')`` followed by ``F.cross_entropy``
(or, for lb_pos/lb_neg, an explicit target times ``log_softmax`` of the interpolated logits:
`benchmarks.reference.dense_loss`), computed in float64.
"""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.reference import GRAD_TOL, IGNORE, dense_loss
from segls.losses import (
    LabelSmoothSoftmaxCE,
    _interpolation,
    _upsample_torch,
    label_smooth_softmax_ce,
)


def interpolate(x, size, align_corners):
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


def composite(x, labels, align_corners, **ce_options):
    """The reference: PyTorch's interpolation, then PyTorch's cross-entropy."""
    full = interpolate(x, labels.shape[-2:], align_corners)
    return F.cross_entropy(full, labels, ignore_index=IGNORE, **ce_options)


def make_case(shape, size, seed=0, ignore_frac=0.2, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(shape, generator=gen, dtype=torch.float64) * 3).to(dtype)
    labels = torch.randint(0, shape[1], (shape[0], *size), generator=gen)
    labels[torch.rand(labels.shape, generator=gen) < ignore_frac] = IGNORE
    return logits, labels


def assert_value_and_grad(got_fn, ref_fn, logits, rtol=1e-10, grad_tol=1e-10):
    """Loss and gradient (with a random upstream gradient) of got_fn against ref_fn."""
    x = logits.detach().requires_grad_()
    got = got_fn(x)
    ref_in = logits.detach().double().requires_grad_()
    expected = ref_fn(ref_in)
    torch.testing.assert_close(got.double(), expected, rtol=rtol, atol=rtol)
    upstream = torch.rand(expected.shape, dtype=torch.float64) + 0.5
    (grad,) = torch.autograd.grad(got, x, upstream.to(got.dtype))
    (expected_grad,) = torch.autograd.grad(expected, ref_in, upstream)
    assert grad.dtype == logits.dtype and grad.stride() == logits.stride()
    atol = grad_tol * expected_grad.abs().max().item() + 1e-12
    torch.testing.assert_close(grad.double(), expected_grad, rtol=0, atol=atol)
    return got, grad


@pytest.fixture
def tiny_bands(monkeypatch):
    """Bands of a few hundred logits: every case crosses band and image boundaries."""
    monkeypatch.setattr(_upsample_torch, "BAND_ELEMENTS", (200, 200))


SIZES = [  # (logits shape, labels' spatial size)
    ((2, 5, 4, 6), (16, 24)),  # ×4
    ((2, 3, 3, 3), (24, 24)),  # ×8
    ((2, 4, 5, 7), (17, 23)),  # no integer factor
    ((1, 3, 5, 6), (5, 18)),  # height kept
    ((2, 3, 1, 4), (7, 9)),  # one source row
]


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(("shape", "size"), SIZES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_equals_interpolate_then_cross_entropy(tiny_bands, align_corners, shape, size, reduction):
    logits, labels = make_case(shape, size)
    weight = torch.linspace(0.3, 2.0, shape[1], dtype=torch.float64)
    assert_value_and_grad(
        lambda x: label_smooth_softmax_ce(
            x, labels, 0.1, weight=weight, reduction=reduction, upsample="bilinear",
            align_corners=align_corners,
        ),
        lambda x: composite(
            x, labels, align_corners, weight=weight, label_smoothing=0.1, reduction=reduction
        ),
        logits,
    )  # fmt: skip


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_lb_pos_lb_neg_against_an_explicit_target(tiny_bands, reduction, weighted):
    logits, labels = make_case((2, 6, 5, 4), (13, 16), seed=1)
    weight = torch.rand(6, dtype=torch.float64) + 0.2 if weighted else None
    assert_value_and_grad(
        lambda x: label_smooth_softmax_ce(
            x, labels, lb_pos=0.9, lb_neg=0.005, weight=weight, reduction=reduction,
            upsample="bilinear", align_corners=True,
        ),
        lambda x: dense_loss(
            x, labels, 0.9, 0.005, weight, reduction, upsample="bilinear", align_corners=True
        ),
        logits,
    )  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_dtypes_and_layouts(dtype, layout):
    logits, labels = make_case((2, 19, 8, 6), (32, 24), seed=2, dtype=dtype)
    logits = logits.contiguous(memory_format=layout)
    got, _ = assert_value_and_grad(
        lambda x: label_smooth_softmax_ce(x, labels, 0.1, upsample="bilinear"),
        lambda x: composite(x, labels, False, label_smoothing=0.1),
        logits,
        rtol=2e-6,
        grad_tol=GRAD_TOL[dtype],
    )
    assert got.dtype == torch.float32


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    num_classes=st.integers(2, 7),
    in_size=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    extra=st.tuples(st.integers(0, 13), st.integers(0, 13)),
    align_corners=st.booleans(),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    eps=st.sampled_from([0.0, 0.1, 0.3]),
    label_dtype=st.sampled_from([torch.int64, torch.int32, torch.uint8]),
    band=st.sampled_from([(1, 1), (50, 50), (2**21, 2**24)]),
    seed=st.integers(0, 2**16),
)
def test_property_against_the_composite(
    batch, num_classes, in_size, extra, align_corners, reduction, eps, label_dtype, band, seed
):
    size = (in_size[0] + extra[0], in_size[1] + extra[1])
    logits, labels = make_case((batch, num_classes, *in_size), size, seed)
    weight = torch.rand(num_classes, dtype=torch.float64) + 0.1
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_upsample_torch, "BAND_ELEMENTS", band)
        assert_value_and_grad(
            lambda x: label_smooth_softmax_ce(
                x, labels.to(label_dtype), eps, weight=weight, reduction=reduction,
                upsample="bilinear", align_corners=align_corners,
            ),
            lambda x: composite(
                x, labels, align_corners, weight=weight, label_smoothing=eps, reduction=reduction
            ),
            logits,
        )  # fmt: skip


def interpolation_matrix(in_size, out_size, align_corners, dtype):
    """(in, out) weights of F.interpolate, read off by interpolating the identity."""
    eye = torch.eye(in_size, dtype=dtype).view(1, in_size, 1, in_size)
    return interpolate(eye, (1, out_size), align_corners)[0, :, 0]


def taps_matrix(in_size, out_size, align_corners, dtype):
    index0, index1, weight0, weight1 = _interpolation.linear_taps(
        in_size, out_size, align_corners, dtype, torch.device("cpu")
    )
    matrix = torch.zeros(in_size, out_size, dtype=dtype)
    columns = torch.arange(out_size)
    matrix.index_put_((index0, columns), weight0, accumulate=True)
    return matrix.index_put_((index1, columns), weight1, accumulate=True)


TAP_SIZES = [(1, 5), (2, 7), (3, 10), (4, 13), (5, 5), (7, 29), (64, 512), (100, 999), (128, 1024)]


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(("in_size", "out_size"), TAP_SIZES)
def test_taps_are_pytorchs_interpolation_weights(align_corners, in_size, out_size):
    expected = interpolation_matrix(in_size, out_size, align_corners, torch.float32)
    assert torch.equal(taps_matrix(in_size, out_size, align_corners, torch.float32), expected)
    index, weight = _interpolation.support_taps(
        in_size, out_size, align_corners, torch.device("cpu")
    )
    assert torch.equal(torch.zeros(in_size, out_size).scatter_add_(1, index, weight), expected)
    expected = interpolation_matrix(in_size, out_size, align_corners, torch.float64)
    assert torch.equal(taps_matrix(in_size, out_size, align_corners, torch.float64), expected)


def test_bands_cover_every_row_once():
    for batch, height, row in [(8, 512, 19 * 1024), (16, 512, 150 * 512), (3, 7, 10), (1, 1, 5)]:
        seen = torch.zeros(batch, height, dtype=torch.long)
        for images, top, bottom in _upsample_torch.bands(batch, height, row):
            seen[images, top:bottom] += 1
        assert torch.all(seen == 1)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_gradcheck_float64(tiny_bands, reduction, align_corners):
    logits, labels = make_case((2, 3, 3, 4), (7, 9), seed=3)
    weight = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: label_smooth_softmax_ce(
            x, labels, 0.2, reduction=reduction, weight=weight, upsample="bilinear",
            align_corners=align_corners,
        ),
        (logits.requires_grad_(),),
        fast_mode=True,
    )  # fmt: skip


def test_all_ignored_empty_batch_and_no_grad():
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    loss = label_smooth_softmax_ce(logits, torch.full((2, 9, 9), IGNORE), upsample="bilinear")
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0
    empty = torch.randn(0, 4, 3, 3, requires_grad=True)
    loss = label_smooth_softmax_ce(
        empty, torch.zeros(0, 9, 9, dtype=torch.long), upsample="bilinear"
    )
    loss.backward()
    assert loss.item() == 0.0 and empty.grad.shape == empty.shape
    logits, labels = make_case((2, 4, 3, 3), (9, 9))
    expected = composite(logits, labels, False, label_smoothing=0.1, reduction="none")
    with torch.no_grad():
        got = label_smooth_softmax_ce(logits, labels, reduction="none", upsample="bilinear")
    torch.testing.assert_close(got, expected)


def test_retain_graph_backward_twice():
    logits, labels = make_case((2, 5, 4, 4), (12, 12), dtype=torch.float32)
    logits.requires_grad_()
    loss = label_smooth_softmax_ce(logits, labels, upsample="bilinear") * 3.0
    loss.backward(retain_graph=True)
    first = logits.grad.clone()
    loss.backward()
    torch.testing.assert_close(logits.grad, 2 * first)


def test_inside_autocast_and_module():
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(3, 5, 1)
    images, labels = torch.randn(2, 3, 4, 4), make_case((2, 5, 4, 4), (16, 16))[1]
    criterion = LabelSmoothSoftmaxCE(0.1, upsample="bilinear", align_corners=True)
    assert "upsample='bilinear', align_corners=True" in repr(criterion)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(images)
        loss = criterion(logits, labels)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    expected = composite(logits.detach().double(), labels, True, label_smoothing=0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.isfinite(conv.weight.grad).all()


@pytest.mark.parametrize(
    ("logits", "labels", "options", "error", "message"),
    [
        ((2, 3, 8, 8), (2, 4, 16), {}, ValueError, r"labels \(4×16\) are smaller than the logits \(8×8\)"),
        ((2, 3, 8), (2, 16), {}, ValueError, r"shape \(N, C, h, w\); got shape \(2, 3, 8\) with 1 spatial dims"),
        ((2, 3, 2, 2, 2), (2, 4, 4, 4), {}, ValueError, r"got shape \(2, 3, 2, 2, 2\) with 3 spatial"),
        ((2, 3, 4, 4), (3, 8, 8), {}, ValueError, r"labels of shape \(2, H, W\).*got labels of shape \(3, 8, 8\)"),
        ((2, 3, 4, 4), (2, 8, 8), {"upsample": "nearest"}, ValueError, "upsample must be None or 'bilinear'; got 'nearest'"),
        ((2, 3, 4, 4), (2, 8, 8), {"align_corners": 1}, TypeError, "align_corners must be True or False; got 1"),
        ((2, 3, 4, 4), (2, 8, 8), {"inplace": True}, ValueError, "inplace=True cannot be combined with upsample"),
        ((2, 3, 0, 4), (2, 8, 8), {}, ValueError, r"h, w >= 1; got shape \(2, 3, 0, 4\)"),
    ],
)  # fmt: skip
def test_bad_inputs_are_named(logits, labels, options, error, message):
    options = {"upsample": "bilinear", **options}
    with pytest.raises(error, match=message):
        label_smooth_softmax_ce(
            torch.randn(logits), torch.zeros(labels, dtype=torch.long), **options
        )
    if set(options) & {"upsample", "align_corners", "inplace"} and (logits, labels) == (
        (2, 3, 4, 4),
        (2, 8, 8),
    ):
        with pytest.raises(error, match=message):
            LabelSmoothSoftmaxCE(**options)


def test_bad_labels_are_named_and_other_checks_still_apply():
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[1, 7, 7], labels[0, 0, 0] = 19, -1
    with pytest.raises(ValueError, match="labels contain -1, 19 but C = 19"):
        label_smooth_softmax_ce(torch.randn(2, 19, 4, 4), labels, upsample="bilinear")
    with pytest.raises(TypeError, match="integer class indices; got dtype torch.float32"):
        label_smooth_softmax_ce(torch.randn(2, 19, 4, 4), labels.float(), upsample="bilinear")
    with pytest.raises(ValueError, match="need at least 2 classes"):
        label_smooth_softmax_ce(torch.randn(2, 1, 4, 4), labels, upsample="bilinear")


def test_under_torch_compile():
    logits, labels = make_case((2, 4, 3, 4), (9, 12), dtype=torch.float32)
    criterion = LabelSmoothSoftmaxCE(0.1, upsample="bilinear", align_corners=True)
    compiled = torch.compile(lambda x, y: criterion(x, y), backend="eager")
    assert_value_and_grad(
        lambda x: compiled(x, labels),
        lambda x: composite(x, labels, True, label_smoothing=0.1),
        logits,
        rtol=1e-6,
        grad_tol=1e-5,
    )


def test_the_manuals_example_runs_offline():
    manual = (Path(__file__).resolve().parents[1] / "docs" / "LOSS.md").read_text()
    section = manual.split("the upsampling fused into the loss", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "docs/LOSS.md", "exec"), namespace)  # our own manual, not user input
    labels = namespace["labels"]
    assert namespace["logits"].shape == (2, 19, 32, 32)
    assert namespace["full"].shape == (2, 19, *labels.shape[-2:])
    expected = composite(namespace["logits"].detach().double(), labels, True, label_smoothing=0.1)
    assert namespace["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert namespace["model"].segmentation_head[0].weight.grad is not None
    assert namespace["seg_pred"].shape == (2, 19, *labels.shape[-2:])
    assert set(namespace["losses"]) == {"loss_ce"}
