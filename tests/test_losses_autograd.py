"""Every autograd feature of F.cross_entropy, on the torch and Triton backends, plain and upsampling.

Double backward (create_graph=True), forward-mode AD (torch.func.jvp, torch.autograd.forward_ad),
torch.func.vmap/grad/hessian and is_grads_batched against the same computation through
F.cross_entropy, after F.interpolate for ``upsample='bilinear'`` (PyTorch's own derivatives are
the golden values). The torch backend is checked in float64, with gradgradcheck; the Triton
kernels take no float64, so there float32 results are compared with PyTorch's float32 ones.
"""

import gc

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import forward_ad

from segls.losses import label_smooth_softmax_ce

IGNORE = 255
REDUCTIONS = ["mean", "sum", "none"]
BACKENDS = [
    pytest.param("torch", marks=pytest.mark.triton_parent),
    pytest.param("triton", marks=pytest.mark.triton_child),
]
DTYPE = {"torch": torch.float64, "triton": torch.float32}
TOL = {torch.float64: {"rtol": 1e-7, "atol": 1e-9}, torch.float32: {"rtol": 1e-4, "atol": 1e-6}}
WEIGHT = [0.5, 1.0, 2.0, 0.1]
FORMS = {  # segls keyword arguments and the matching F.cross_entropy ones
    "eps+weights": (
        {"lb_smooth": 0.2, "weight": WEIGHT},
        {"label_smoothing": 0.2, "weight": WEIGHT},
    ),
    "lb_pos/lb_neg": ({"lb_pos": 0.85, "lb_neg": 0.05}, {"label_smoothing": 0.2}),
}
# the loss on logits of the labels' size, or on 3×2 logits upsampled to 5×4 labels
VARIANTS = {
    "plain": {},
    "bilinear": {"upsample": "bilinear"},
    "align_corners": {"upsample": "bilinear", "align_corners": True},
}
UPSAMPLING_CASES = [  # (reduction, form, variant) beside the plain loss's full product
    ("mean", "eps+weights", "bilinear"),
    ("sum", "lb_pos/lb_neg", "align_corners"),
    ("none", "eps+weights", "align_corners"),
]
PLAIN_AND_UPSAMPLING = [
    *((reduction, form, "plain") for reduction in REDUCTIONS for form in FORMS),
    *UPSAMPLING_CASES,
]


def inputs(dtype, seed=0, batch=2, variant="plain"):
    """Logits (batch, 4, 3, 2) and labels of their size (plain) or 5×4, two pixels ignored."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, 4, 3, 2, generator=gen, dtype=torch.float64).to(dtype)
    size = (3, 2) if variant == "plain" else (5, 4)
    labels = torch.randint(0, 4, (batch, *size), generator=gen)
    labels[0, 0, 0] = labels[-1, -1, -1] = IGNORE
    return logits, labels


def ours(reduction="mean", backend="torch", form="eps+weights", labels=None, variant="plain"):
    kwargs = {**FORMS[form][0], **VARIANTS[variant]}
    if "weight" in kwargs:  # float64, as PyTorch's: 0.1 in float32 is off by 1.5e-8
        kwargs["weight"] = torch.tensor(kwargs["weight"], dtype=torch.float64)
    return lambda x, y=labels: label_smooth_softmax_ce(
        x, y, reduction=reduction, backend=backend, **kwargs
    )


def pytorchs(reduction="mean", form="eps+weights", labels=None, variant="plain"):
    """F.cross_entropy with the same targets (lb_pos=0.85, lb_neg=0.05 is ε=0.2 with C=4), after
    F.interpolate to the labels' size when upsampling."""
    kwargs = dict(FORMS[form][1])
    align_corners = VARIANTS[variant].get("align_corners", False)

    def loss(x, y=labels):
        if variant != "plain":
            x = F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=align_corners)
        weight = kwargs.get("weight")
        return F.cross_entropy(
            x, y, weight=None if weight is None else torch.tensor(weight, dtype=x.dtype),
            ignore_index=IGNORE, reduction=reduction, label_smoothing=kwargs["label_smoothing"],
        )  # fmt: skip

    return loss


# ---- double backward ------------------------------------------------------------------------


@pytest.mark.triton_parent
@pytest.mark.parametrize(("reduction", "form", "variant"), PLAIN_AND_UPSAMPLING)
def test_gradgradcheck_float64(reduction, form, variant):
    logits, labels = inputs(torch.float64, batch=1, variant=variant)
    fn = ours(reduction, form=form, labels=labels, variant=variant)
    assert torch.autograd.gradgradcheck(fn, (logits.requires_grad_(),))


def second_derivative(loss_fn, logits, direction):
    """d/dx <d(loss + |x|^2)/dx, direction>, through a non-leaf input (x = 1 * leaf)."""
    leaf = logits.detach().clone().requires_grad_()
    x = leaf * 1.0
    total = loss_fn(x).sum() + (x**2).sum()
    (grad,) = torch.autograd.grad(total, x, create_graph=True)
    assert grad.requires_grad
    (hvp,) = torch.autograd.grad((grad * direction).sum(), leaf)
    return grad.detach(), hvp


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("variant", ["plain", "bilinear"])
def test_second_derivative_of_loss_plus_square_equals_pytorchs(backend, reduction, variant):
    logits, labels = inputs(DTYPE[backend], variant=variant)
    direction = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1)).to(logits)
    got = second_derivative(
        ours(reduction, backend, labels=labels, variant=variant), logits, direction
    )
    expected = second_derivative(
        pytorchs(reduction, labels=labels, variant=variant), logits, direction
    )
    torch.testing.assert_close(got, expected, **TOL[logits.dtype])
    # the loss's own part is there: without it the result is 2 * direction
    assert not torch.allclose(got[1], 2 * direction, **TOL[logits.dtype])


@pytest.mark.triton_parent
def test_hessian_equals_pytorchs():
    logits, labels = inputs(torch.float64, batch=1)
    got = torch.autograd.functional.hessian(ours(labels=labels), logits)
    expected = torch.autograd.functional.hessian(pytorchs(labels=labels), logits)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_double_backward_after_the_logits_are_gone_raises(backend):
    logits, labels = inputs(DTYPE[backend])
    leaf = logits.requires_grad_()
    loss = ours(backend=backend, labels=labels)(leaf * 2.0)  # nothing else keeps leaf * 2.0
    gc.collect()
    with pytest.raises(RuntimeError, match="keep a reference to the logits until backward"):
        torch.autograd.grad(loss, leaf, create_graph=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_upsampling_double_backward_needs_no_other_reference_to_the_logits(backend):
    """The upsampling Functions save the low-resolution logits, unlike the plain loss."""
    logits, labels = inputs(DTYPE[backend], variant="bilinear")
    results = []
    for fn in (
        ours(backend=backend, labels=labels, variant="bilinear"),
        pytorchs(labels=labels, variant="bilinear"),
    ):
        leaf = logits.clone().requires_grad_()
        loss = fn(leaf * 2.0)  # nothing else keeps leaf * 2.0
        gc.collect()
        (grad,) = torch.autograd.grad(loss, leaf, create_graph=True)
        results.append((grad, *torch.autograd.grad(grad.pow(2).sum(), leaf)))
    torch.testing.assert_close(*results, **TOL[logits.dtype])


@pytest.mark.parametrize("backend", BACKENDS)
def test_double_backward_after_the_logits_changed_in_place_raises(backend):
    logits, labels = inputs(DTYPE[backend])
    x = logits.requires_grad_() * 1.0
    loss = ours(backend=backend, labels=labels)(x)
    with torch.no_grad():
        x.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(loss, x, create_graph=True)
    assert torch.autograd.grad(loss, x)[0].shape == x.shape  # a plain backward needs no logits


@pytest.mark.triton_child
def test_inplace_triton_refuses_double_backward():
    logits, labels = inputs(torch.float32)
    x = logits.requires_grad_() * 1.0
    loss = label_smooth_softmax_ce(x, labels, backend="triton", inplace=True)
    with pytest.raises(RuntimeError, match="inplace=True overwrote them"):
        torch.autograd.grad(loss, x, create_graph=True)


# ---- forward-mode AD, vmap, torch.func ------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("reduction", "form", "variant"), PLAIN_AND_UPSAMPLING)
def test_jvp_equals_pytorchs(backend, reduction, form, variant):
    logits, labels = inputs(DTYPE[backend], variant=variant)
    tangent = torch.randn(logits.shape, generator=torch.Generator().manual_seed(2)).to(logits)
    fn = ours(reduction, backend, form, labels, variant)
    got = torch.func.jvp(fn, (logits,), (tangent,))
    expected = torch.func.jvp(pytorchs(reduction, form, labels, variant), (logits,), (tangent,))
    torch.testing.assert_close(got, expected, **TOL[logits.dtype])
    with forward_ad.dual_level():
        unpacked = forward_ad.unpack_dual(fn(forward_ad.make_dual(logits, tangent)))
    torch.testing.assert_close((unpacked.primal, unpacked.tangent), expected, **TOL[logits.dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("variant", ["plain", "bilinear"])
def test_vmap_over_logits_and_labels_equals_pytorchs(backend, reduction, variant):
    logits, labels = inputs(DTYPE[backend], batch=6, variant=variant)
    batched_logits = logits.view(3, 2, *logits.shape[1:])
    batched_labels = labels.view(3, 2, *labels.shape[1:])
    pairs = list(zip(batched_logits, batched_labels, strict=True))
    got = torch.func.vmap(ours(reduction, backend, variant=variant))(batched_logits, batched_labels)
    expected = torch.stack([pytorchs(reduction, variant=variant)(x, y) for x, y in pairs])
    torch.testing.assert_close(got, expected, **TOL[logits.dtype])
    shared = torch.func.vmap(ours(reduction, backend, labels=labels[:2], variant=variant))(
        batched_logits
    )
    expected = torch.stack(
        [pytorchs(reduction, labels=labels[:2], variant=variant)(x) for x in batched_logits]
    )
    torch.testing.assert_close(shared, expected, **TOL[logits.dtype])
    grads = torch.func.vmap(torch.func.grad(ours(backend=backend, variant=variant)))(
        batched_logits, batched_labels
    )
    expected = torch.stack([torch.func.grad(pytorchs(variant=variant))(x, y) for x, y in pairs])
    torch.testing.assert_close(grads, expected, **TOL[logits.dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["plain", "bilinear"])
def test_vmap_checks_the_labels_of_every_batch_entry(backend, variant):
    logits, labels = inputs(DTYPE[backend], batch=6, variant=variant)
    labels[5, 0, 0] = 7
    with pytest.raises(ValueError, match="labels contain 7 but C = 4"):
        torch.func.vmap(ours(backend=backend, variant=variant))(
            logits.view(3, 2, *logits.shape[1:]), labels.view(3, 2, *labels.shape[1:])
        )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("variant", ["plain", "bilinear"])
def test_is_grads_batched_equals_pytorchs(backend, reduction, variant):
    logits, labels = inputs(DTYPE[backend], variant=variant)
    results = []
    for fn in (
        ours(reduction, backend, labels=labels, variant=variant),
        pytorchs(reduction, labels=labels, variant=variant),
    ):
        x = logits.clone().requires_grad_()
        loss = fn(x)
        upstream = torch.randn((3, *loss.shape), generator=torch.Generator().manual_seed(3))
        results.append(torch.autograd.grad(loss, x, upstream.to(loss), is_grads_batched=True))
    torch.testing.assert_close(*results, **TOL[logits.dtype])


@pytest.mark.parametrize("backend", BACKENDS)
def test_func_grad_and_hessian_equal_pytorchs(backend):
    logits, labels = inputs(DTYPE[backend], batch=1)
    for transform in (torch.func.grad, torch.func.hessian):
        got = transform(ours(backend=backend, labels=labels))(logits)
        expected = transform(pytorchs(labels=labels))(logits)
        torch.testing.assert_close(got, expected, **TOL[logits.dtype])


FUSED = {  # the autograd Function ordinary training goes through, per backend and variant
    ("torch", "plain"): "LabelSmoothCEFunction",
    ("triton", "plain"): "TritonLabelSmoothCEFunction",
    ("torch", "bilinear"): "UpsampleLabelSmoothCEFunction",
    ("triton", "bilinear"): "TritonUpsampleCEFunction",
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["plain", "bilinear"])
def test_ordinary_training_keeps_the_fused_function(backend, variant):
    logits, labels = inputs(DTYPE[backend], variant=variant)
    loss = ours(backend=backend, labels=labels, variant=variant)(logits.requires_grad_())
    assert type(loss.grad_fn).__name__ == FUSED[backend, variant] + "Backward"
