"""The loss against independent references: hand-worked values and PyTorch's cross_entropy."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.reference import IGNORE, dense_loss
from segls.losses import LabelSmoothSoftmaxCE, label_smooth_softmax_ce


def test_worked_example_matches_pytorch_label_smoothing():
    logits = torch.tensor([[0.5, 0.1, 0.1], [1.7, 0.2, 0.1], [0.9, 2.7, 0.1], [1.1, 0.3, 2.6]])
    labels = torch.tensor([0, 0, 1, 2])
    expected = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(logits, labels)
    got = label_smooth_softmax_ce(logits, labels, 0.1)
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)


def test_plain_cross_entropy_by_hand():
    # softmax([-1, 0.5, 2])[1] = e^0.5 / (e^-1 + e^0.5 + e^2) = 0.1753
    # softmax([-1, 0.5, 3])[2] = e^3 / (e^-1 + e^0.5 + e^3) = 0.9088
    logits = torch.tensor([[-1.0, 0.5, 2.0], [-1.0, 0.5, 3.0]])
    labels = torch.tensor([1, 2])
    expected = -(math.log(0.1753) + math.log(0.9088)) / 2
    assert expected == pytest.approx(0.9185, abs=1e-4)
    got = label_smooth_softmax_ce(logits, labels, 0.0)
    assert got.item() == pytest.approx(0.9185, abs=1e-4)


def test_default_smoothing_is_0_1():
    logits, labels = torch.randn(3, 4), torch.tensor([0, 1, 3])
    expected = F.cross_entropy(logits, labels, label_smoothing=0.1)
    assert label_smooth_softmax_ce(logits, labels).item() == pytest.approx(
        expected.item(), abs=1e-6
    )


def test_decomposition_into_ce_and_uniform_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, 7, dtype=torch.float64)
    labels = torch.randint(0, 5, (2, 6, 7))
    labels[0, :2] = IGNORE
    eps = 0.2
    valid = labels != IGNORE
    log_p = torch.log_softmax(logits, 1)
    ce = -log_p.gather(1, torch.where(valid, labels, 0).unsqueeze(1)).squeeze(1)[valid].mean()
    uniform = -log_p.mean(1)[valid].mean()  # H(u, p) with u = 1/C
    got = label_smooth_softmax_ce(logits, labels, eps)
    torch.testing.assert_close(got, (1 - eps) * ce + eps * uniform)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_lb_pos_lb_neg_against_explicit_target(reduction):
    torch.manual_seed(1)
    logits = torch.randn(3, 19, 5, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 19, (3, 5, 4))
    labels[1, 1:3] = IGNORE
    got = label_smooth_softmax_ce(logits, labels, lb_pos=0.9, lb_neg=0.005, reduction=reduction)
    valid = labels != IGNORE
    target = torch.full((3, 19, 5, 4), 0.005, dtype=torch.float64)
    target.scatter_(1, torch.where(valid, labels, 0).unsqueeze(1), 0.9)
    per_pixel = -(target * torch.log_softmax(logits, 1)).sum(1) * valid
    expected = {"mean": per_pixel.sum() / valid.sum(), "sum": per_pixel.sum(), "none": per_pixel}
    torch.testing.assert_close(got, expected[reduction])
    (g_got,) = torch.autograd.grad(got.sum(), logits)
    (g_exp,) = torch.autograd.grad(expected[reduction].sum(), logits)
    torch.testing.assert_close(g_got, g_exp)
    ref = dense_loss(logits.detach(), labels, 0.9, 0.005)
    assert dense_loss(logits.detach(), labels, 0.9, 0.005, reduction="none").shape == labels.shape
    if reduction == "mean":
        torch.testing.assert_close(got.detach(), ref)


def _layout(tensor, kind):
    if kind == "channels_last" and tensor.dim() == 4:
        return tensor.contiguous(memory_format=torch.channels_last)
    if kind == "channels_last" and tensor.dim() == 5:
        return tensor.contiguous(memory_format=torch.channels_last_3d)
    if kind == "strided":
        # every other element along the last dim of a wider tensor: a non-dense view
        wide = torch.repeat_interleave(tensor, 2, dim=-1)
        return wide[..., ::2]
    return tensor


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 3),
    num_classes=st.integers(2, 7),
    spatial=st.lists(st.integers(1, 5), min_size=0, max_size=3),
    eps=st.sampled_from([0.0, 0.05, 0.1, 0.3, 0.9]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    weighted=st.booleans(),
    ignore_frac=st.sampled_from([0.0, 0.3, 1.0]),
    layout=st.sampled_from(["contiguous", "channels_last", "strided"]),
    label_dtype=st.sampled_from([torch.int64, torch.int32, torch.uint8]),
    seed=st.integers(0, 2**16),
)
def test_matches_pytorch_cross_entropy(
    batch, num_classes, spatial, eps, reduction, weighted, ignore_frac, layout, label_dtype, seed
):
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, num_classes, *spatial)
    base = torch.randn(shape, generator=gen, dtype=torch.float64) * 3
    labels = torch.randint(0, num_classes, (batch, *spatial), generator=gen)
    labels[torch.rand(labels.shape, generator=gen) < ignore_frac] = IGNORE
    weight = torch.rand(num_classes, generator=gen, dtype=torch.float64) + 0.1 if weighted else None

    logits = _layout(base.clone(), layout).requires_grad_()
    ref_logits = base.clone().requires_grad_()
    got = label_smooth_softmax_ce(
        logits, labels.to(label_dtype), eps, reduction=reduction, weight=weight
    )
    expected = F.cross_entropy(
        ref_logits,
        labels,
        weight=weight,
        ignore_index=IGNORE,
        label_smoothing=eps,
        reduction=reduction,
    )
    num_valid = int((labels != IGNORE).sum())
    if reduction == "mean" and num_valid == 0:
        expected = torch.zeros(
            (), dtype=torch.float64, requires_grad=True
        )  # PyTorch gives NaN here
    torch.testing.assert_close(got, expected.detach() if num_valid == 0 else expected)
    (g_got,) = torch.autograd.grad(got.sum(), logits)
    g_exp = torch.zeros_like(base)
    if num_valid:
        (g_exp,) = torch.autograd.grad(expected.sum(), ref_logits)
    torch.testing.assert_close(g_got, g_exp)
    assert g_got.stride() == logits.stride() or layout == "strided"


def test_all_ignored_mean_is_zero_with_zero_grad_where_pytorch_gives_nan():
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    labels = torch.full((2, 3, 3), IGNORE)
    assert torch.isnan(F.cross_entropy(logits, labels, ignore_index=IGNORE, label_smoothing=0.1))
    loss = label_smooth_softmax_ce(logits, labels, 0.1)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(logits.grad) == 0


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_zero_weight_on_every_label_gives_zero_like_all_ignored(eps):
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    labels = torch.randint(0, 2, (2, 3, 3))
    weight = torch.tensor([0.0, 0.0, 1.0, 2.0])  # classes 0 and 1, the only labels, weigh 0
    pytorchs = F.cross_entropy(logits, labels, weight=weight, label_smoothing=eps)
    assert torch.isnan(pytorchs)
    loss = label_smooth_softmax_ce(logits, labels, eps, weight=weight)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(logits.grad) == 0


def test_empty_batch_gives_zero():
    logits = torch.randn(0, 3, 4, 4, requires_grad=True)
    loss = label_smooth_softmax_ce(logits, torch.zeros(0, 4, 4, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(dtype):
    torch.manual_seed(2)
    logits = (torch.randn(2, 19, 8, 8) * 4).to(dtype).requires_grad_()
    labels = torch.randint(0, 19, (2, 8, 8))
    labels[0, 0] = IGNORE
    loss = label_smooth_softmax_ce(logits, labels, 0.1)
    loss.backward()
    assert loss.dtype == torch.float32 and logits.grad.dtype == dtype
    ref_in = logits.detach().double().requires_grad_()
    ref = F.cross_entropy(ref_in, labels, ignore_index=IGNORE, label_smoothing=0.1)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-3
    torch.testing.assert_close(
        logits.grad.double(), ref_in.grad, atol=tol * ref_in.grad.abs().max().item(), rtol=0
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_stable_for_huge_logits(dtype):
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3]], dtype=dtype, requires_grad=True)
    labels = torch.tensor([1, 2])
    loss = label_smooth_softmax_ce(logits, labels, 0.1)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    ref = F.cross_entropy(logits.detach().double(), labels, label_smoothing=0.1)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16])
def test_inside_autocast(amp_dtype):
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(3, 5, 1)
    images, labels = torch.randn(2, 3, 6, 6), torch.randint(0, 5, (2, 6, 6))
    with torch.autocast("cpu", dtype=amp_dtype):
        logits = conv(images)
        loss = label_smooth_softmax_ce(logits, labels, 0.1)
    assert logits.dtype == amp_dtype and loss.dtype == torch.float32
    loss.backward()
    ref = F.cross_entropy(logits.detach().float(), labels, label_smoothing=0.1)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


def test_under_torch_compile():
    torch.manual_seed(4)
    criterion = LabelSmoothSoftmaxCE(0.1)
    compiled = torch.compile(lambda x, y: criterion(x, y))
    logits = torch.randn(2, 4, 5, 5, requires_grad=True)
    labels = torch.randint(0, 4, (2, 5, 5))
    labels[0, 0, 0] = IGNORE
    loss = compiled(logits, labels)
    loss.backward()
    ref_in = logits.detach().clone().requires_grad_()
    F.cross_entropy(ref_in, labels, ignore_index=IGNORE, label_smoothing=0.1).backward()
    torch.testing.assert_close(logits.grad, ref_in.grad)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck_float64(reduction):
    torch.manual_seed(5)
    logits = torch.randn(2, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 4, (2, 3, 2))
    labels[1, 0, 0] = IGNORE
    weight = torch.tensor([0.5, 1.0, 2.0, 0.1], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: label_smooth_softmax_ce(x, labels, 0.2, reduction=reduction, weight=weight),
        (logits,),
    )
    assert torch.autograd.gradcheck(
        lambda x: label_smooth_softmax_ce(x, labels, lb_pos=0.8, lb_neg=0.05, reduction=reduction),
        (logits,),
    )


def test_retain_graph_backward_twice_gives_the_same_gradient():
    logits = torch.randn(2, 3, 4, requires_grad=True)
    labels = torch.randint(0, 3, (2, 4))
    loss = label_smooth_softmax_ce(logits, labels, 0.1) * 3.0
    loss.backward(retain_graph=True)
    first = logits.grad.clone()
    loss.backward()
    torch.testing.assert_close(logits.grad, 2 * first)


def test_module_weight_follows_the_module_and_is_not_in_state_dict():
    criterion = LabelSmoothSoftmaxCE(0.1, weight=[1.0, 2.0, 3.0]).double()
    assert criterion.weight.dtype == torch.float64
    assert "weight" not in criterion.state_dict()
    assert "lb_smooth=0.1" in repr(criterion)
    logits, labels = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 2, IGNORE])
    expected = F.cross_entropy(
        logits,
        labels,
        weight=torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
        label_smoothing=0.1,
        ignore_index=IGNORE,
    )
    torch.testing.assert_close(criterion(logits, labels), expected)


def test_import_pulls_in_torch_alone():
    code = (
        "import sys, segls.losses\n"
        "heavy = {'albumentations', 'segmentation_models_pytorch', 'tensorboard', 'torchvision',"
        " 'cv2', 'yaml', 'timm'}\n"
        "loaded = sorted(m for m in heavy if m in sys.modules)\n"
        "others = sorted(m for m in sys.modules if m.startswith('segls.') and not m.startswith('segls.losses'))\n"
        "print(loaded, others)\n"
        "assert not loaded and not others, (loaded, others)\n"
    )
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_options_and_their_rules_import_without_torch():
    code = (
        "import sys\n"
        "from segls.losses.options import LossOptions\n"
        "from segls.losses.rules import settings_problems\n"
        "options = LossOptions(0.2, ignore_index=-1)\n"
        "assert options.targets(4) == (1.0 - 0.2 + 0.05, 0.05), options.targets(4)\n"
        "assert settings_problems(1.5, None, None)[0].option == 'lb_smooth'\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    root = str(Path(__file__).resolve().parents[1])  # this checkout's segls, not an installed one
    environment = {**os.environ, "PYTHONPATH": root}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, cwd=root
    )
    assert result.returncode == 0, result.stdout + result.stderr
