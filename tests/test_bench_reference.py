"""The shared golden values (benchmarks/reference.py) against PyTorch's own cross-entropy.

The tests of the loss and the GPU check compare segls against `dense_loss`; here it is tied
to ``F.cross_entropy`` (and ``F.interpolate``) in float64, so that it stays the formula.
"""

import pytest
import torch
import torch.nn.functional as F

from benchmarks.reference import IGNORE, dense_loss, make_inputs, smoothed


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_dense_loss_is_f_cross_entropy_with_label_smoothing(reduction, weighted):
    x, labels = make_inputs((2, 5, 3, 4), torch.float64, ignore_fraction=0.3)
    weight = torch.linspace(0.2, 2.0, 5, dtype=torch.float64) if weighted else None
    x.requires_grad_()
    got = dense_loss(x, labels, *smoothed(0.1, 5), weight, reduction)
    expected = F.cross_entropy(
        x, labels, weight=weight, ignore_index=IGNORE, label_smoothing=0.1, reduction=reduction
    )
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    (g_got,) = torch.autograd.grad(got.sum(), x)
    (g_expected,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(g_got, g_expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("align_corners", [False, True])
def test_dense_loss_upsampled_is_interpolate_then_f_cross_entropy(align_corners):
    x, labels = make_inputs((2, 4, 3, 5), torch.float64, label_size=(7, 11))
    full = F.interpolate(x, size=(7, 11), mode="bilinear", align_corners=align_corners)
    expected = F.cross_entropy(full, labels, ignore_index=IGNORE, label_smoothing=0.2)
    got = dense_loss(x, labels, *smoothed(0.2, 4), upsample="bilinear", align_corners=align_corners)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_labels_out_of_range_are_ignored_and_all_ignored_gives_zero():
    x, labels = make_inputs((2, 4, 3, 3), torch.float64)
    bad = labels.clone()
    bad[0, 0] = -1
    bad[1, 1] = 4
    masked = torch.where((bad < 0) | (bad >= 4), IGNORE, bad)
    torch.testing.assert_close(dense_loss(x, bad, 0.9, 0.025), dense_loss(x, masked, 0.9, 0.025))
    x.requires_grad_()
    loss = dense_loss(x, torch.full_like(labels, IGNORE), 0.9, 0.025)
    (grad,) = torch.autograd.grad(loss, x)
    assert loss.item() == 0.0 and torch.count_nonzero(grad) == 0


def test_make_inputs_is_seeded_and_ignores_the_fraction_asked():
    logits, labels = make_inputs((4, 3, 32, 32), torch.bfloat16, ignore_fraction=0.25, seed=5)
    again, same = make_inputs((4, 3, 32, 32), torch.bfloat16, ignore_fraction=0.25, seed=5)
    assert torch.equal(logits, again) and torch.equal(labels, same)
    assert logits.dtype == torch.bfloat16 and labels.dtype == torch.int64
    assert 0.2 < (labels == IGNORE).float().mean().item() < 0.3
    assert set(labels[labels != IGNORE].unique().tolist()) == {0, 1, 2}
    wide, small = make_inputs((1, 3, 4, 5), layout="channels_last", label_size=(8, 10))
    assert wide.is_contiguous(memory_format=torch.channels_last) and small.shape == (1, 8, 10)
