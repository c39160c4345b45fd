"""Lovász-softmax: golden values from a hand-worked example and from smp's implementation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import LovaszLoss
from torch import nn

from segls import config
from segls.losses import LabelSmoothSoftmaxCE, LovaszSoftmax, PlusLovasz, lovasz_softmax
from segls.predict import build_criterion
from segls.train import build_objective


def test_two_pixel_example_worked_by_hand():
    # probabilities [0.8, 0.2] for a pixel of class 0 and [0.4, 0.6] for a pixel of class 1.
    # Class 0: errors 0.2 (pixel 0, foreground) and 0.4 (pixel 1); sorted order pixel 1, 0;
    # Jaccard loss along it: 1 - 1/2, then 1 - 0/2 -> weights 0.5, 0.5 -> 0.5*0.4 + 0.5*0.2.
    # Class 1: errors 0.2 (pixel 0), 0.4 (pixel 1, foreground); sorted pixel 1, 0;
    # Jaccard loss 1 - 0/1 = 1, then 1 - 0/2 = 1 -> weights 1, 0 -> 0.4.
    probs = torch.tensor([[0.8, 0.2], [0.4, 0.6]])
    logits = probs.log().T.reshape(1, 2, 1, 2)
    labels = torch.tensor([[[0, 1]]])
    expected = (0.5 * 0.4 + 0.5 * 0.2 + 0.4) / 2
    assert lovasz_softmax(logits, labels).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("num_classes", "shape", "absent"),
    [(3, (4, 9, 7), None), (5, (2, 16, 16), 3), (2, (1, 3, 3), None), (19, (2, 8, 8), 0)],
)
def test_value_and_gradient_equal_smp_lovasz_loss(num_classes, shape, absent):
    """segmentation_models_pytorch's LovaszLoss (a per-class loop) is the independent source."""
    generator = torch.Generator().manual_seed(num_classes)
    logits = torch.randn(shape[0], num_classes, *shape[1:], generator=generator)
    labels = torch.randint(0, num_classes, shape, generator=generator)
    labels[torch.rand(shape, generator=generator) < 0.2] = 255
    if absent is not None:
        labels[labels == absent] = (absent + 1) % num_classes
    ours_in = logits.clone().requires_grad_(True)
    theirs_in = logits.clone().requires_grad_(True)
    ours = lovasz_softmax(ours_in, labels)
    theirs = LovaszLoss("multiclass", ignore_index=255)(theirs_in, labels)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_in.grad, theirs_in.grad, rtol=1e-4, atol=1e-6)


def test_confident_correct_prediction_costs_nothing_and_uniform_costs_one_minus_one_over_c():
    labels = torch.tensor([[[0, 1], [2, 1]]])
    logits = 50.0 * torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    assert lovasz_softmax(logits, labels).item() == pytest.approx(0.0, abs=1e-6)
    # Uniform probabilities: a class's own pixels have error 2/3, the others 1/3, so its
    # pixels come first. Class 0 (one pixel): Jaccard losses 1 - 0/1, 1 - 0/2, ... are all 1,
    # weights 1, 0, 0, 0 -> 2/3. Class 1 (two pixels): 1 - 1/2, then 1 - 0/2 = 1 -> weights
    # 1/2, 1/2, 0, 0 -> 2/3. Class 2 like class 0. Mean 2/3.
    uniform = torch.zeros(1, 3, 2, 2)
    assert lovasz_softmax(uniform, labels).item() == pytest.approx(2 / 3, abs=1e-6)


def test_ignored_pixels_change_nothing_and_get_no_gradient():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 4, 5, 6, generator=generator)
    labels = torch.randint(0, 4, (1, 5, 6), generator=generator)
    padded_logits = torch.cat([logits, 10 * torch.randn(1, 4, 5, 6, generator=generator)], 3)
    padded_labels = torch.cat([labels, torch.full((1, 5, 6), 255)], 2)
    padded_logits.requires_grad_(True)
    loss = lovasz_softmax(padded_logits, padded_labels)
    loss.backward()
    assert loss.item() == pytest.approx(lovasz_softmax(logits, labels).item(), abs=1e-6)
    assert padded_logits.grad[..., 6:].abs().max().item() == 0.0


def test_all_ignored_gives_zero_with_zero_gradient():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = lovasz_softmax(logits, torch.full((2, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and not math.isnan(loss.item())
    assert logits.grad.abs().max().item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits_are_computed_in_float32(dtype):
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 8, 8, generator=generator)
    labels = torch.randint(0, 3, (2, 8, 8), generator=generator)
    half = lovasz_softmax(logits.to(dtype), labels)
    assert half.dtype == torch.float32
    expected = lovasz_softmax(logits.to(dtype).float(), labels)
    torch.testing.assert_close(half, expected)


def test_out_of_range_labels_are_named():
    labels = torch.tensor([[[0, 7], [1, 255]]])
    with pytest.raises(ValueError, match=r"labels contain 7 but C = 3"):
        lovasz_softmax(torch.randn(1, 3, 2, 2), labels)
    with pytest.raises(ValueError, match=r"labels shape"):
        LovaszSoftmax()(torch.randn(1, 3, 2, 2), torch.zeros(1, 3, 3, dtype=torch.long))


def test_plus_lovasz_adds_the_weighted_term_and_rejects_a_negative_weight():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 6, 6, generator=generator)
    labels = torch.randint(0, 3, (2, 6, 6), generator=generator)
    base = LabelSmoothSoftmaxCE(0.1)
    combined = PlusLovasz(base, 0.5)
    expected = base(logits, labels) + 0.5 * lovasz_softmax(logits, labels)
    torch.testing.assert_close(combined(logits, labels), expected)
    with pytest.raises(ValueError, match="-1"):
        PlusLovasz(base, -1.0)


def test_config_weight_builds_the_training_objective():
    plain = config.from_dict({})
    criterion = build_criterion(plain)
    objective = build_objective(plain, criterion)  # the criterion; the loader checks labels
    assert type(objective) is type(criterion) and objective.check_labels is False
    assert objective.lb_smooth == criterion.lb_smooth and criterion.check_labels is True
    weighted = config.from_dict({"loss": {"lovasz_weight": 0.5}})
    objective = build_objective(weighted, build_criterion(weighted))
    assert isinstance(objective, PlusLovasz) and objective.weight == 0.5
    assert isinstance(objective.base, nn.Module)
    with pytest.raises(config.ConfigError, match="lovasz_weight"):
        config.from_dict({"loss": {"lovasz_weight": -0.5}})


@pytest.mark.parametrize("align_corners", [False, True])
def test_with_an_upsampling_base_the_term_sees_the_interpolated_logits(align_corners):
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 7, requires_grad=True)
    labels = torch.randint(0, 4, (2, 19, 26))
    labels[0, :3] = 255
    base = LabelSmoothSoftmaxCE(0.1, upsample="bilinear", align_corners=align_corners)
    combined = PlusLovasz(base, 0.5)(logits, labels)
    full = F.interpolate(logits, size=(19, 26), mode="bilinear", align_corners=align_corners)
    # PyTorch's cross-entropy and smp's Lovász loss on the upsampled logits
    expected = F.cross_entropy(full, labels, ignore_index=255, label_smoothing=0.1)
    expected = expected + 0.5 * LovaszLoss("multiclass", ignore_index=255)(full, labels)
    torch.testing.assert_close(combined, expected, rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(combined, logits)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)


def test_fused_config_builds_an_upsampling_objective_and_a_plain_criterion():
    cfg = config.from_dict(
        {"model": {"arch": "FPN"}, "loss": {"upsample": "fused", "lovasz_weight": 1.0}}
    )
    criterion = build_criterion(cfg)
    objective = build_objective(cfg, criterion)
    assert criterion.upsample is None  # evaluation scores full-resolution predictions
    assert objective.base.upsample == "bilinear" and objective.base.align_corners is True
