"""Segmentation networks: built from smp offline, with local weights, run on any image size.

`factory` builds an smp architecture from a model config; `weights` loads encoder weights
from local files only; `inference` runs a model on images of any size (whole or sliding
windows, flips, scales).
"""

from segls.models.factory import ARCHS, build_model
from segls.models.inference import (
    MODES,
    InferenceSettings,
    forward_padded,
    full_resolution,
    output_stride,
    predict_logits,
    settings_from_config,
)

__all__ = [
    "ARCHS",
    "MODES",
    "InferenceSettings",
    "build_model",
    "forward_padded",
    "full_resolution",
    "output_stride",
    "predict_logits",
    "settings_from_config",
]
