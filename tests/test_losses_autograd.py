"""Every autograd feature of F.cross_entropy, on the torch and Triton backends.

Double backward (create_graph=True), forward-mode AD (torch.func.jvp, torch.autograd.forward_ad),
torch.func.vmap/grad/hessian and is_grads_batched against the same computation through
F.cross_entropy (PyTorch's own derivatives are the golden values). The torch backend is checked
in float64, with gradgradcheck; the Triton kernel takes no float64, so there float32 results
are compared with F.cross_entropy's float32 ones.
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


def inputs(dtype, seed=0, batch=2):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, 4, 3, 2, generator=gen, dtype=torch.float64).to(dtype)
    labels = torch.randint(0, 4, (batch, 3, 2), generator=gen)
    labels[0, 0, 0] = labels[-1, 2, 1] = IGNORE
    return logits, labels


def ours(reduction="mean", backend="torch", form="eps+weights", labels=None):
    kwargs = dict(FORMS[form][0])
    if "weight" in kwargs:
        kwargs["weight"] = torch.tensor(kwargs["weight"])
    return lambda x, y=labels: label_smooth_softmax_ce(
        x, y, reduction=reduction, backend=backend, **kwargs
    )


def pytorchs(reduction="mean", form="eps+weights", labels=None):
    """F.cross_entropy with the same targets (lb_pos=0.85, lb_neg=0.05 is ε=0.2 with C=4)."""
    kwargs = dict(FORMS[form][1])
    return lambda x, y=labels: F.cross_entropy(
        x,
        y,
        weight=torch.tensor(kwargs.pop("weight"), dtype=x.dtype) if "weight" in kwargs else None,
        ignore_index=IGNORE,
        reduction=reduction,
        **kwargs,
    )


# ---- double backward ------------------------------------------------------------------------


@pytest.mark.triton_parent
@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradgradcheck_float64(reduction, form):
    logits, labels = inputs(torch.float64, batch=1)
    fn = ours(reduction, form=form, labels=labels)
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
def test_second_derivative_of_loss_plus_square_equals_pytorchs(backend, reduction):
    logits, labels = inputs(DTYPE[backend])
    direction = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1)).to(logits)
    got = second_derivative(ours(reduction, backend, labels=labels), logits, direction)
    expected = second_derivative(pytorchs(reduction, labels=labels), logits, direction)
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
@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_jvp_equals_pytorchs(backend, reduction, form):
    logits, labels = inputs(DTYPE[backend])
    tangent = torch.randn(logits.shape, generator=torch.Generator().manual_seed(2)).to(logits)
    got = torch.func.jvp(ours(reduction, backend, form, labels), (logits,), (tangent,))
    expected = torch.func.jvp(pytorchs(reduction, form, labels), (logits,), (tangent,))
    torch.testing.assert_close(got, expected, **TOL[logits.dtype])
    with forward_ad.dual_level():
        dual = forward_ad.make_dual(logits, tangent)
        unpacked = forward_ad.unpack_dual(ours(reduction, backend, form, labels)(dual))
    torch.testing.assert_close((unpacked.primal, unpacked.tangent), expected, **TOL[logits.dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_vmap_over_logits_and_labels_equals_pytorchs(backend, reduction):
    logits, labels = inputs(DTYPE[backend], batch=6)
    batched_logits, batched_labels = logits.view(3, 2, 4, 3, 2), labels.view(3, 2, 3, 2)
    got = torch.func.vmap(ours(reduction, backend))(batched_logits, batched_labels)
    expected = torch.stack(
        [pytorchs(reduction)(x, y) for x, y in zip(batched_logits, batched_labels, strict=True)]
    )
    torch.testing.assert_close(got, expected, **TOL[logits.dtype])
    shared = torch.func.vmap(ours(reduction, backend, labels=labels[:2]))(batched_logits)
    expected = torch.stack([pytorchs(reduction, labels=labels[:2])(x) for x in batched_logits])
    torch.testing.assert_close(shared, expected, **TOL[logits.dtype])


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_checks_the_labels_of_every_batch_entry(backend):
    logits, labels = inputs(DTYPE[backend], batch=6)
    labels[5, 0, 0] = 7
    with pytest.raises(ValueError, match="labels contain 7 but C = 4"):
        torch.func.vmap(ours(backend=backend))(logits.view(3, 2, 4, 3, 2), labels.view(3, 2, 3, 2))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_is_grads_batched_equals_pytorchs(backend, reduction):
    logits, labels = inputs(DTYPE[backend])
    results = []
    for fn in (ours(reduction, backend, labels=labels), pytorchs(reduction, labels=labels)):
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


@pytest.mark.parametrize("backend", BACKENDS)
def test_ordinary_training_keeps_the_fused_function(backend):
    logits, labels = inputs(DTYPE[backend])
    loss = ours(backend=backend, labels=labels)(logits.requires_grad_())
    fused = "TritonLabelSmoothCEFunction" if backend == "triton" else "LabelSmoothCEFunction"
    assert type(loss.grad_fn).__name__ == fused + "Backward"
