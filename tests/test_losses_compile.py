"""The loss under torch.compile: one graph without the label check, one graph break with it.

Dynamo's tracing is what graph breaks and ``fullgraph=True`` are about, so the tests compile
with the ``aot_eager`` backend (dynamo and AOT autograd, no code generation) on small shapes.
"""

import pytest
import torch
import torch._dynamo

from segls.losses import LabelSmoothSoftmaxCE, lovasz_softmax
from segls.losses.module import build_criterion
from segls.losses.options import LossOptions

NUM_CLASSES = 5
PATHS = {
    "plain": {},
    "sum": {"reduction": "sum"},
    "none": {"reduction": "none"},
    "weighted": {"weight": [1.0, 2.0, 0.5, 1.0, 3.0]},
    "upsampled": {"upsample": "bilinear"},
    "upsampled, weighted, none": {
        "upsample": "bilinear",
        "weight": [1.0, 2.0, 0.5, 1.0, 3.0],
        "reduction": "none",
    },
    "plus Lovász": {"lovasz_weight": 0.5},
    "plus Lovász, upsampled": {"lovasz_weight": 0.5, "upsample": "bilinear"},
}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _criterion(settings: dict, check_labels: bool) -> torch.nn.Module:
    settings = dict(settings)
    upsample = settings.pop("upsample", None)
    lovasz_weight = settings.pop("lovasz_weight", 0.0)
    options = LossOptions(check_labels=check_labels, **settings)
    return build_criterion(options, upsample=upsample, lovasz_weight=lovasz_weight)


def _inputs(settings: dict, ignored: str = "half") -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, NUM_CLASSES, 4, 6, generator=generator)
    size = (8, 12) if settings.get("upsample") else (4, 6)
    labels = torch.randint(0, NUM_CLASSES, (2, *size), generator=generator)
    if ignored == "half":
        labels[:, : size[0] // 2] = 255
    elif ignored == "all":
        labels.fill_(255)
    return logits, labels


def _graph_breaks(loss_fn, logits, labels) -> int:
    """Dynamo's graph breaks in a step that computes the logits (a stand-in model), then the loss.

    A break inside the loss also ends the caller's graph; with ops of the caller after the loss
    too, dynamo (``nested_graph_breaks`` off, its default) resumes them in a third graph.
    """
    torch._dynamo.reset()
    step = lambda x, y: loss_fn(2 * x, y)  # noqa: E731
    return torch._dynamo.explain(step)(logits, labels).graph_break_count


@pytest.mark.parametrize("path", list(PATHS))
def test_graph_breaks_none_unchecked_one_with_the_label_check(path):
    settings = PATHS[path]
    logits, labels = _inputs(settings)
    assert _graph_breaks(_criterion(settings, check_labels=False), logits, labels) == 0
    assert _graph_breaks(_criterion(settings, check_labels=True), logits, labels) == 1


def test_lovasz_term_alone_breaks_only_for_its_label_check():
    logits, labels = _inputs({})
    assert _graph_breaks(lambda x, y: lovasz_softmax(x, y, check_labels=False), logits, labels) == 0
    assert _graph_breaks(lambda x, y: lovasz_softmax(x, y), logits, labels) == 1


def _value_and_grad(function, logits, labels):
    logits = logits.clone().requires_grad_()
    loss = function(logits, labels)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    return loss.detach(), grad


@pytest.mark.parametrize("path", ["plain", "none", "weighted", "upsampled, weighted, none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fullgraph_value_and_gradient_equal_eager(path, dtype):
    settings = PATHS[path]
    criterion = _criterion(settings, check_labels=False)
    compiled = torch.compile(criterion, backend="aot_eager", fullgraph=True, dynamic=False)
    tolerance = (
        {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-3}
    )
    for ignored in ("half", "all", "none"):
        logits, labels = _inputs(settings, ignored)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            expected = _value_and_grad(criterion, logits, labels)
            actual = _value_and_grad(compiled, logits, labels)
        for got, want in zip(actual, expected, strict=True):
            assert got.dtype == want.dtype
            torch.testing.assert_close(got, want, **tolerance)
    if ignored == "all" or settings.get("reduction") != "none":
        assert torch.isfinite(actual[0]).all()


def test_fullgraph_plus_lovasz_equals_eager():
    settings = PATHS["plus Lovász"]
    criterion = _criterion(settings, check_labels=False)
    compiled = torch.compile(criterion, backend="aot_eager", fullgraph=True, dynamic=False)
    for ignored in ("half", "all"):
        logits, labels = _inputs(settings, ignored)
        expected = _value_and_grad(criterion, logits, labels)
        actual = _value_and_grad(compiled, logits, labels)
        for got, want in zip(actual, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_label_check_under_compile_names_the_bad_labels():
    criterion = LabelSmoothSoftmaxCE()
    compiled = torch.compile(criterion, backend="aot_eager")
    logits, labels = _inputs({})
    labels[0, 0, 0] = 7
    with pytest.raises(ValueError, match="labels contain 7 but C = 5"):
        compiled(logits, labels)


def test_fullgraph_with_the_label_check_says_how_to_go_without_it():
    compiled = torch.compile(LabelSmoothSoftmaxCE(), backend="aot_eager", fullgraph=True)
    with pytest.raises(Exception, match="check_labels=False"):
        compiled(*_inputs({}))
