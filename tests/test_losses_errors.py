"""Every bad input to the loss raises a ValueError/TypeError that names the value."""

import pytest
import torch

from segls.losses import LabelSmoothSoftmaxCE, label_smooth_softmax_ce

LOGITS = torch.randn(2, 19, 4, 4)


def labels_with(*values):
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    labels.view(-1)[: len(values)] = torch.tensor(values)
    return labels


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (labels_with(19, 20, 255), "labels contain 19, 20 but C = 19"),
        (labels_with(-1, 3), "labels contain -1 but C = 19"),
        (labels_with(254), "labels contain 254 but C = 19"),
    ],
)
def test_out_of_range_labels_are_named(labels, message):
    with pytest.raises(ValueError, match=message):
        label_smooth_softmax_ce(LOGITS, labels)


def test_uint8_labels_out_of_range():
    labels = labels_with(200).to(torch.uint8)
    with pytest.raises(ValueError, match="labels contain 200 but C = 19"):
        label_smooth_softmax_ce(LOGITS, labels)


def test_other_ignore_index_makes_255_an_error():
    with pytest.raises(ValueError, match="labels contain 255 .*ignore_index=-100"):
        label_smooth_softmax_ce(LOGITS, labels_with(255), ignore_index=-100)


def test_float_labels():
    with pytest.raises(TypeError, match="integer class indices; got dtype torch.float32"):
        label_smooth_softmax_ce(LOGITS, labels_with(1).float())


def test_bool_labels():
    with pytest.raises(TypeError, match="torch.bool"):
        label_smooth_softmax_ce(LOGITS, labels_with(1).bool())


def test_integer_logits():
    with pytest.raises(TypeError, match="logits must be float.*torch.int64"):
        label_smooth_softmax_ce(LOGITS.long(), labels_with(1))


def test_one_dimensional_logits():
    with pytest.raises(ValueError, match=r"at least 2 dimensions; got shape \(5,\)"):
        label_smooth_softmax_ce(torch.randn(5), torch.tensor([1]))


def test_shape_mismatch_names_both_shapes_and_the_fix():
    with pytest.raises(
        ValueError, match=r"labels shape \(2, 8, 8\) does not match .*\(2, 19, 4, 4\).*interpolate"
    ):
        label_smooth_softmax_ce(LOGITS, torch.zeros(2, 8, 8, dtype=torch.long))


def test_single_class():
    with pytest.raises(ValueError, match="at least 2 classes; logits have C = 1"):
        label_smooth_softmax_ce(torch.randn(2, 1, 3), torch.zeros(2, 3, dtype=torch.long))


@pytest.mark.parametrize("eps", [-0.1, 1.0, 1.5])
def test_smoothing_out_of_range(eps):
    with pytest.raises(ValueError, match=rf"lb_smooth must be in \[0, 1\); got {eps}"):
        label_smooth_softmax_ce(LOGITS, labels_with(1), eps)
    with pytest.raises(ValueError, match="lb_smooth must be in"):
        LabelSmoothSoftmaxCE(eps)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lb_pos": -0.1, "lb_neg": 0.0}, "must be >= 0; got lb_pos=-0.1"),
        ({"lb_pos": 0.9, "lb_neg": -0.01}, "must be >= 0; got lb_pos=0.9, lb_neg=-0.01"),
        ({"lb_pos": 0.1, "lb_neg": 0.2}, "lb_pos must be >= lb_neg; got lb_pos=0.1 < lb_neg=0.2"),
        ({"lb_pos": 0.9}, "go together; got lb_pos=0.9, lb_neg=None"),
        ({"lb_smooth": 0.1, "lb_pos": 0.9, "lb_neg": 0.005}, "either lb_smooth .* not both"),
    ],
)
def test_lb_pos_lb_neg_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        label_smooth_softmax_ce(LOGITS, labels_with(1), **kwargs)
    with pytest.raises(ValueError, match=message):
        LabelSmoothSoftmaxCE(**kwargs)


def test_weight_wrong_length():
    with pytest.raises(ValueError, match=r"expected shape \(19,\), got \(3,\)"):
        label_smooth_softmax_ce(LOGITS, labels_with(1), weight=[1.0, 2.0, 3.0])


def test_weight_negative_or_nan():
    weight = torch.ones(19)
    weight[3] = -2.0
    with pytest.raises(ValueError, match=r"finite and >= 0; got \[-2.0\]"):
        label_smooth_softmax_ce(LOGITS, labels_with(1), weight=weight)
    with pytest.raises(ValueError, match=r"got \[nan\]"):
        LabelSmoothSoftmaxCE(weight=[1.0, float("nan")])


def test_weight_that_requires_grad():
    weight = torch.ones(19, requires_grad=True)
    with pytest.raises(ValueError, match="weight must not require grad"):
        label_smooth_softmax_ce(LOGITS, labels_with(1), weight=weight)
    with pytest.raises(RuntimeError, match="not differentiable with respect to argument 'weight'"):
        torch.nn.functional.cross_entropy(LOGITS, labels_with(1), weight=weight)
    with torch.no_grad():
        label_smooth_softmax_ce(LOGITS, labels_with(1), weight=weight)


def test_reduction_and_backend_names():
    with pytest.raises(ValueError, match="reduction must be one of .* got 'avg'"):
        label_smooth_softmax_ce(LOGITS, labels_with(1), reduction="avg")
    with pytest.raises(ValueError, match="backend must be one of .* got 'cuda'"):
        LabelSmoothSoftmaxCE(backend="cuda")


def test_label_check_can_be_switched_off_and_costs_nothing_for_good_labels():
    loss = label_smooth_softmax_ce(LOGITS, labels_with(1, 255), check_labels=False)
    assert torch.isfinite(loss)
