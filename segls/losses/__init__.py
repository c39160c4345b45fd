"""Label-smoothing softmax cross-entropy for dense prediction; depends on torch alone."""

from segls.losses.functional import label_smooth_softmax_ce
from segls.losses.module import LabelSmoothSoftmaxCE

__all__ = ["LabelSmoothSoftmaxCE", "label_smooth_softmax_ce"]
