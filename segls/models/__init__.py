"""Segmentation networks: built from smp offline, with local weights, run on any image size.

`factory` builds an smp architecture from a model config; `weights` loads encoder weights
from local files only; `checkpoint` reads checkpoint files and a model's weights for
inference; `inference` runs a model on images of any size (whole or sliding windows, flips,
scales); `classes` predicts class ids alone, in bounded memory for sliding windows.
"""

from segls.lazy import lazy_exports

# Loaded on first use, so that the config's import of `segls.models.names` stays light.
_SOURCES = {
    "ARCHS": "factory",
    "CheckpointError": "checkpoint",
    "MODES": "names",
    "Windows": "classes",
    "InferenceSettings": "inference",
    "build_model": "factory",
    "forward_padded": "inference",
    "full_resolution": "inference",
    "load_weights": "checkpoint",
    "output_stride": "inference",
    "predict_classes": "classes",
    "predict_logits": "inference",
    "settings_from_config": "inference",
}
__all__ = sorted(_SOURCES)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _SOURCES)
