"""Label-smoothing softmax cross-entropy for dense prediction (and a Lovász-softmax term to add
to it); depends on torch alone."""

from segls.losses.functional import label_smooth_softmax_ce
from segls.losses.lovasz import LovaszSoftmax, PlusLovasz, lovasz_softmax
from segls.losses.module import LabelSmoothSoftmaxCE

__all__ = [
    "LabelSmoothSoftmaxCE",
    "LovaszSoftmax",
    "PlusLovasz",
    "label_smooth_softmax_ce",
    "lovasz_softmax",
]
