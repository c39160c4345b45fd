"""The Triton kernel against the dense reference (benchmarks/reference.py), run on the CPU by
Triton's interpreter.

Triton reads TRITON_INTERPRET once, when it is first imported, and earlier tests in a session
may import it (torch.compile does). So the kernel tests run in a child pytest process started
with TRITON_INTERPRET=1; here they are deselected and test_kernel_tests_pass_under_the_interpreter
fails when any of them fails; the child runs the triton_child tests of every test file
(tests/triton_helpers.py). Tests that launch no kernel run here, in the parent.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from triton_helpers import assert_kernel_tests_pass, child_test_files

from benchmarks.reference import GRAD_TOL, IGNORE, VALUE_TOL, dense_loss
from segls.losses import LabelSmoothSoftmaxCE, LossOptions, label_smooth_softmax_ce

pytest.importorskip("triton")  # an optional extra; without it 'auto' never picks the kernel

TARGETS = LossOptions(lb_pos=0.9, lb_neg=0.01, ignore_index=IGNORE)
REPO = Path(__file__).resolve().parents[1]
in_child = pytest.mark.triton_child  # deselected outside the child (tests/conftest.py)
in_parent = pytest.mark.triton_parent
SHAPES = {"nchw": (2, 5, 6, 7), "3d": (2, 4, 3, 4, 5), "2d": (9, 6), "wide": (2, 300, 3, 5)}


def check(logits, labels, lb_pos, lb_neg, weight=None, reduction="mean", **kwargs):
    """Loss and gradient of the triton backend against dense_loss in float64."""
    logits = logits.detach().requires_grad_()
    got = label_smooth_softmax_ce(
        logits,
        labels,
        lb_pos=lb_pos,
        lb_neg=lb_neg,
        weight=weight,
        reduction=reduction,
        backend="triton",
        **kwargs,
    )
    assert type(got.grad_fn).__name__ == "TritonLabelSmoothCEFunctionBackward"
    assert got.dtype == torch.float32 and got.shape == (() if reduction != "none" else labels.shape)
    ref_in = logits.detach().double().requires_grad_()
    expected = dense_loss(ref_in, labels, lb_pos, lb_neg, weight, reduction)
    torch.testing.assert_close(
        got.detach().double(), expected.detach(), rtol=VALUE_TOL, atol=VALUE_TOL
    )
    upstream = torch.rand(got.shape, dtype=torch.float64) + 0.5  # exercises backward's scale
    (grad,) = torch.autograd.grad(got, logits, upstream.float())
    (expected_grad,) = torch.autograd.grad(expected, ref_in, upstream)
    assert grad.dtype == logits.dtype and grad.shape == logits.shape
    atol = GRAD_TOL[logits.dtype] * expected_grad.abs().max().item() + 1e-7
    torch.testing.assert_close(grad.double(), expected_grad, rtol=0, atol=atol)
    return grad


def make_labels(shape, num_classes, ignore_frac=0.3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, shape, generator=gen)
    labels[torch.rand(shape, generator=gen) < ignore_frac] = IGNORE
    return labels


def make_logits(shape, dtype=torch.float32, layout="contiguous", seed=0):
    gen = torch.Generator().manual_seed(seed)
    values = (torch.randn(shape, generator=gen) * 3).to(dtype)
    if layout == "channels_last":
        fmt = torch.channels_last if values.dim() == 4 else torch.channels_last_3d
        return values.contiguous(memory_format=fmt)
    if layout == "strided":  # every other element of the last dim: evenly strided, not dense
        return torch.repeat_interleave(values, 2, dim=-1)[..., ::2]
    if layout == "crop":  # a window of a bigger tensor: pixel dims that do not merge
        big = torch.zeros([n + 2 for n in shape], dtype=dtype)
        window = big[tuple(slice(1, n + 1) for n in shape)]
        window.copy_(values)
        return window
    return values


def one_of_each(shape_name, layout, dtype):
    shape = SHAPES[shape_name]
    labels = make_labels((shape[0], *shape[2:]), shape[1])
    return make_logits(shape, dtype, layout), labels


PRESETS = [
    ("nchw", "contiguous"),
    ("nchw", "channels_last"),
    ("nchw", "strided"),
    ("nchw", "crop"),
    ("3d", "contiguous"),
    ("3d", "channels_last"),
    ("2d", "contiguous"),
    ("2d", "strided"),
    ("wide", "contiguous"),
    ("wide", "channels_last"),
]


@in_child
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("shape_name", "layout"), PRESETS)
def test_every_dtype_and_layout(dtype, shape_name, layout):
    logits, labels = one_of_each(shape_name, layout, dtype)
    num_classes = logits.shape[1]
    weight = torch.linspace(0.2, 2.0, num_classes)
    eps = 0.1
    grad = check(logits, labels, 1 - eps + eps / num_classes, eps / num_classes, weight)
    if layout in ("contiguous", "channels_last"):
        assert grad.stride() == logits.stride()


@in_child
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("form", ["eps", "lb_pos_lb_neg"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_options(reduction, weighted, form, layout):
    logits, labels = one_of_each("nchw", layout, torch.float32)
    weight = torch.tensor([0.5, 1.0, 2.0, 0.1, 3.0]) if weighted else None
    lb_pos, lb_neg = (0.9, 0.005) if form == "lb_pos_lb_neg" else (1 - 0.2 + 0.2 / 5, 0.2 / 5)
    check(logits, labels, lb_pos, lb_neg, weight, reduction)


@in_child
def test_epsilon_form_matches_pytorch_label_smoothing():
    logits, labels = one_of_each("nchw", "channels_last", torch.float32)
    weight = torch.tensor([0.5, 1.0, 2.0, 0.1, 3.0])
    got = label_smooth_softmax_ce(logits, labels, 0.2, weight=weight, backend="triton")
    expected = F.cross_entropy(
        logits.double(), labels, weight.double(), ignore_index=IGNORE, label_smoothing=0.2
    )
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


@in_child
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("pattern", ["none", "rows", "all"])
def test_ignore_patterns(reduction, pattern):
    logits, labels = one_of_each("nchw", "contiguous", torch.float32)
    labels = labels.clone()
    labels[labels == IGNORE] = 0
    if pattern == "rows":
        labels[0] = IGNORE
        labels[1, ::2] = IGNORE
    elif pattern == "all":
        labels[:] = IGNORE
    grad = check(logits, labels, 0.9, 0.02, torch.rand(5) + 0.1, reduction)
    if pattern == "all":
        assert torch.count_nonzero(grad) == 0


@in_child
def test_all_ignored_mean_is_zero_with_zero_grad():
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    loss = label_smooth_softmax_ce(logits, torch.full((2, 3, 3), IGNORE), backend="triton")
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0


@in_child
def test_empty_batch_gives_zero():
    logits = torch.randn(0, 3, 4, 4, requires_grad=True)
    loss = label_smooth_softmax_ce(logits, torch.zeros(0, 4, 4, dtype=torch.long), backend="triton")
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.shape == logits.shape


@in_child
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_looped_path_with_a_small_forced_block(monkeypatch, layout):
    from segls.losses import _triton

    monkeypatch.setattr(_triton, "MAX_BLOCK_C", 4)  # C = 10 -> class chunks of 4, 4, 2
    logits = make_logits((2, 10, 3, 5), layout=layout)
    labels = make_labels((2, 3, 5), 10)
    _, _, meta = _triton.kernel_arguments(logits, labels, TARGETS, None, None)
    assert not meta["SINGLE_PASS"] and meta["BLOCK_C"] == 4
    check(logits, labels, 0.9, 0.01, torch.rand(10) + 0.1)
    check(logits, labels, 0.8, 0.0, None, "none")


@in_child
def test_sixty_four_bit_index_math(monkeypatch):
    from segls.losses import _triton

    monkeypatch.setattr(_triton, "INDEX64_FROM", 0)
    for shape_name, layout in [("nchw", "crop"), ("wide", "channels_last")]:
        logits, labels = one_of_each(shape_name, layout, torch.float32)
        _, _, meta = _triton.kernel_arguments(logits, labels, TARGETS, None, None)
        assert meta["INDEX64"]
        check(logits, labels, 0.9, 0.01)


@in_child
def test_more_than_three_unmergeable_spatial_dims():
    logits = make_logits((2, 3, 2, 3, 2, 3), layout="crop")
    check(logits, make_labels((2, 2, 3, 2, 3), 3), 0.9, 0.05)


@in_child
@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 3),
    num_classes=st.integers(2, 12),
    spatial=st.lists(st.integers(1, 5), min_size=0, max_size=3),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
    layout=st.sampled_from(["contiguous", "channels_last", "strided", "crop"]),
    form=st.sampled_from([(0.1, None), (0.0, None), (None, (0.7, 0.03))]),
    weighted=st.booleans(),
    ignore_frac=st.sampled_from([0.0, 0.3, 1.0]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    label_dtype=st.sampled_from([torch.int64, torch.int32, torch.uint8]),
    seed=st.integers(0, 2**16),
)
def test_against_torch_backend(
    batch,
    num_classes,
    spatial,
    dtype,
    layout,
    form,
    weighted,
    ignore_frac,
    reduction,
    label_dtype,
    seed,
):
    shape = (batch, num_classes, *spatial)
    if layout == "channels_last" and len(shape) not in (4, 5):
        layout = "contiguous"
    logits = make_logits(shape, dtype, layout, seed)
    labels = make_labels((batch, *spatial), num_classes, ignore_frac, seed).to(label_dtype)
    weight = torch.rand(num_classes) + 0.1 if weighted else None
    eps, explicit = form
    kwargs = {"lb_pos": explicit[0], "lb_neg": explicit[1]} if explicit else {"lb_smooth": eps}
    results = []
    for backend in ("triton", "torch"):
        x = logits.detach().float().requires_grad_()  # the torch backend on the same values
        if backend == "triton":
            x = logits.detach().requires_grad_()
        loss = label_smooth_softmax_ce(
            x, labels, weight=weight, reduction=reduction, backend=backend, **kwargs
        )
        (grad,) = torch.autograd.grad(loss.sum(), x)
        results.append((loss, grad.float()))
    (loss, grad), (ref_loss, ref_grad) = results
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    atol = GRAD_TOL[dtype] * ref_grad.abs().max().item() + 1e-7
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=atol)


@in_child
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_inplace_overwrites_the_logits_with_the_gradient(layout):
    values = make_logits((2, 5, 6, 7), layout=layout)
    labels = make_labels((2, 6, 7), 5)
    ref_in = values.double().requires_grad_()
    dense_loss(ref_in, labels, 0.9, 0.025).backward()
    upstream = values.clone().requires_grad_()
    logits = upstream * 1.0  # a non-leaf whose producer saved nothing
    loss = label_smooth_softmax_ce(
        logits, labels, lb_pos=0.9, lb_neg=0.025, backend="triton", inplace=True
    )
    loss.backward()
    torch.testing.assert_close(upstream.grad.double(), ref_in.grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits.detach().double(), ref_in.grad, rtol=0, atol=1e-6)
    assert logits.stride() == values.stride()


@in_child
def test_inplace_on_a_leaf_and_without_grad():
    values = make_logits((2, 5, 6, 7))
    labels = make_labels((2, 6, 7), 5)
    ref_in = values.double().requires_grad_()
    dense_loss(ref_in, labels, 0.9, 0.025, reduction="sum").backward()
    leaf = values.clone().requires_grad_()
    criterion = LabelSmoothSoftmaxCE(
        lb_pos=0.9, lb_neg=0.025, reduction="sum", backend="triton", inplace=True
    )
    criterion(leaf, labels).backward()
    torch.testing.assert_close(leaf.grad.double(), ref_in.grad, rtol=0, atol=1e-5)
    torch.testing.assert_close(leaf.detach().double(), ref_in.grad, rtol=0, atol=1e-5)
    untouched = values.clone()
    label_smooth_softmax_ce(untouched, labels, backend="triton", inplace=True)
    assert torch.equal(untouched, values)  # no gradient needed: nothing written


@in_child
def test_inplace_is_visible_to_autograd():
    values = torch.randn(2, 5, 6, 7, requires_grad=True)
    logits = values.exp()  # exp saves its output for backward
    loss = label_smooth_softmax_ce(
        logits, make_labels((2, 6, 7), 5), backend="triton", inplace=True
    )
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@in_child
def test_inplace_refuses_expanded_logits():
    logits = torch.randn(1, 5, 6, 7).expand(3, 5, 6, 7).requires_grad_()
    with pytest.raises(ValueError, match="inplace=True needs logits whose elements do not share"):
        label_smooth_softmax_ce(logits, make_labels((3, 6, 7), 5), backend="triton", inplace=True)


@in_child
def test_out_of_range_labels_are_masked_without_the_check():
    logits = make_logits((2, 19, 4, 4))
    labels = make_labels((2, 4, 4), 19)
    labels.view(-1)[:4] = torch.tensor([19, 20, -1, 1000])
    check(logits, labels, 0.9, 0.005, check_labels=False)
    small = labels.clamp(0, 255).to(torch.uint8)
    small.view(-1)[0] = 200
    check(logits, small, 0.9, 0.005, check_labels=False)


@in_child
def test_out_of_range_labels_raise_with_the_check():
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    labels.view(-1)[:3] = torch.tensor([19, 20, 255])
    with pytest.raises(ValueError, match="labels contain 19, 20 but C = 19"):
        label_smooth_softmax_ce(torch.randn(2, 19, 4, 4), labels, backend="triton")
    labels.view(-1)[:2] = torch.tensor([-1, 3])
    with pytest.raises(ValueError, match="labels contain -1 but C = 19"):
        label_smooth_softmax_ce(torch.randn(2, 19, 4, 4), labels, backend="triton")


@in_child
def test_auto_on_cpu_and_float64_use_torch():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    labels = make_labels((2, 4, 4), 3)
    auto = label_smooth_softmax_ce(logits, labels)
    assert type(auto.grad_fn).__name__ == "LabelSmoothCEFunctionBackward"
    as_double = label_smooth_softmax_ce(logits.double(), labels, backend="triton")
    assert type(as_double.grad_fn).__name__ == "LabelSmoothCEFunctionBackward"


@in_child
def test_retain_graph_and_determinism():
    logits = make_logits((2, 5, 6, 7)).requires_grad_()
    labels = make_labels((2, 6, 7), 5)
    loss = label_smooth_softmax_ce(logits, labels, backend="triton") * 3.0
    loss.backward(retain_graph=True)
    first = logits.grad.clone()
    loss.backward()
    torch.testing.assert_close(logits.grad, 2 * first)
    again = label_smooth_softmax_ce(logits, labels, backend="triton") * 3.0
    assert torch.equal(again, loss)


@in_child
def test_inside_autocast():
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(3, 5, 1)
    images, labels = torch.randn(2, 3, 6, 6), make_labels((2, 6, 6), 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(images)
        loss = label_smooth_softmax_ce(logits, labels, 0.1, backend="triton")
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    expected = F.cross_entropy(
        logits.detach().double(), labels, ignore_index=IGNORE, label_smoothing=0.1
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


# ---- the parent process: no kernel launches -------------------------------------------------


@in_parent
def test_kernel_tests_pass_under_the_interpreter():
    assert Path(__file__) in child_test_files()
    assert_kernel_tests_pass()


@in_parent
def test_cpu_tensors_need_cuda_without_the_interpreter():
    code = (
        "import sys, torch\n"
        "from segls.losses import label_smooth_softmax_ce as loss\n"
        "x, y = torch.randn(2, 3, 4), torch.zeros(2, 4, dtype=torch.long)\n"
        "loss(x, y)\n"
        "assert 'triton' not in sys.modules, 'auto on CPU imported triton'\n"
        "assert 'torch._dynamo' not in sys.modules, 'the loss imported dynamo'\n"
        "try:\n"
        "    loss(x, y, backend='triton')\n"
        "except ValueError as error:\n"
        "    print(error)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "backend='triton' needs CUDA tensors; got logits on cpu" in result.stdout
    assert "TRITON_INTERPRET=1" in result.stdout


def in_kernel_order(kernel, args: dict, meta: dict) -> tuple:
    """(kernel, args, meta) with the arguments by name put in the kernel's parameter order."""
    ordered_meta = {name: meta[name] for name in kernel.arg_names if name in meta}
    ordered_meta["num_warps"] = meta["num_warps"]
    positional = [args[name] for name in kernel.arg_names if name in args]
    assert len(positional) + len(ordered_meta) == len(kernel.arg_names) + 1
    return kernel, positional, ordered_meta


@in_parent
def test_merge_pixel_dims():
    from segls.losses._triton import _pixel_dims

    logits = torch.empty(2, 5, 6, 7)
    labels = torch.empty(2, 6, 7, dtype=torch.long)
    assert _pixel_dims(logits, labels, logits, None) == [(2, [210, 42, 210, 0]), (42, [1, 1, 1, 0])]
    channels_last = logits.contiguous(memory_format=torch.channels_last)
    assert _pixel_dims(channels_last, labels, channels_last, labels) == [(84, [5, 1, 5, 1])]
    window = torch.empty(3, 5, 8, 9)[1:, :, 1:7, 2:]
    assert [size for size, _ in _pixel_dims(window, labels, None, None)] == [2, 6, 7]


@in_parent
@pytest.mark.parametrize(
    ("shape", "dtype", "layout", "weighted", "reduction", "index64"),
    [
        ((2, 19, 64, 128), torch.float32, "contiguous", False, "mean", False),
        ((2, 150, 32, 32), torch.bfloat16, "channels_last", True, "none", False),
        ((2, 300, 16, 16), torch.float16, "contiguous", True, "sum", True),
    ],
)
def test_kernel_compiles_for_sm90(monkeypatch, shape, dtype, layout, weighted, reduction, index64):
    """The interpreter is lenient; the real compiler (to a cubin; no GPU needed) is not."""
    from triton_helpers import compile_for_sm90

    from segls.losses import _triton

    if index64:
        monkeypatch.setattr(_triton, "INDEX64_FROM", 0)
    logits = make_logits(shape, dtype, layout)
    labels = make_labels((shape[0], *shape[2:]), shape[1])
    weight = torch.ones(shape[1]) if weighted else None
    loss_map = torch.empty(labels.shape) if reduction == "none" else None
    options = LossOptions(lb_pos=0.9, lb_neg=0.01, weight=weight, ignore_index=IGNORE)
    _, args, meta = _triton.kernel_arguments(
        logits, labels, options, torch.empty_like(logits), loss_map
    )
    compiled = compile_for_sm90(*in_kernel_order(_triton._label_smooth_ce_kernel, args, meta))
    assert compiled.asm["cubin"]
    assert "ld.global" in compiled.asm["ptx"] and "st.global" in compiled.asm["ptx"]


@in_parent
def test_gpu_benchmark_runs_end_to_end_without_cuda(tmp_path, capsys):
    from benchmarks.cli import bench_loss_gpu as bench

    assert (
        bench.main(
            ["--small", "--repeats", "1", "--warmup", "0", "--json", str(tmp_path / "bench.json")]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| segls triton |" in out
    assert ("skipped (no CUDA device)" in out) != torch.cuda.is_available()
    assert (tmp_path / "bench.json").read_text().startswith("{")
