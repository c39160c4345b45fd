"""float32 accuracy: segls' error against a float64 reference is at most PyTorch's own.

For each logit scale, with and without class weights and for every reduction, both losses are
computed in float32 on the same inputs and compared with F.cross_entropy in float64 (the
reference). Half of the pixels carry their top class as label, where the true per-pixel loss is
small and a formula that subtracts two large terms loses its digits: the largest relative
error catches that. The root-mean-square error is taken over all pixels (or all scalars) of
several draws; the largest absolute error is not used, as it is the rounding of whichever pixel
has the largest loss and moves by half an ulp from draw to draw.
"""

import pytest
import torch
import torch.nn.functional as F

from segls.losses import label_smooth_softmax_ce

IGNORE = 255
BACKENDS = [
    pytest.param("torch", marks=pytest.mark.triton_parent),
    pytest.param("triton", marks=pytest.mark.triton_child),
]


def draw(scale, weighted, seed, shape):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=gen) * scale
    labels = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=gen)
    labels = torch.where(torch.rand(labels.shape, generator=gen) < 0.5, logits.argmax(1), labels)
    labels[torch.rand(labels.shape, generator=gen) < 0.1] = IGNORE
    weight = torch.rand(shape[1], generator=gen) * 8 if weighted else None
    return logits, labels, weight


def error_statistics(got, reference):
    """Root-mean-square error, and the largest error relative to the reference where it is not
    0, of per-pixel maps or of one scalar per draw (stacked)."""
    diff = (got.double() - reference).abs()
    nonzero = reference != 0
    relative = diff[nonzero] / reference.abs()[nonzero]
    return diff.pow(2).mean().sqrt().item(), relative.max().item()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weights-up-to-8"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("scale", [1, 10, 30])
def test_float32_error_is_at_most_pytorchs(backend, reduction, weighted, eps, scale):
    results = {"reference": [], "segls": [], "pytorch": []}
    per_pixel = reduction == "none"
    for seed in range(4 if per_pixel else 8):
        logits, labels, weight = draw(scale, weighted, seed, (2 if per_pixel else 1, 19, 8, 8))
        kwargs = {"ignore_index": IGNORE, "label_smoothing": eps, "reduction": reduction}
        results["reference"].append(
            F.cross_entropy(
                logits.double(), labels, None if weight is None else weight.double(), **kwargs
            )
        )
        results["pytorch"].append(F.cross_entropy(logits, labels, weight, **kwargs))
        results["segls"].append(
            label_smooth_softmax_ce(
                logits, labels, eps, weight=weight, reduction=reduction, backend=backend
            )
        )
    reference = torch.stack(results["reference"])
    assert all(r.dtype == torch.float32 for r in results["segls"] + results["pytorch"])
    ours = error_statistics(torch.stack(results["segls"]), reference)
    theirs = error_statistics(torch.stack(results["pytorch"]), reference)
    for name, our_error, their_error in zip(["rms", "max relative"], ours, theirs, strict=True):
        assert our_error <= 1.5 * their_error + 1e-7, (name, ours, theirs)
