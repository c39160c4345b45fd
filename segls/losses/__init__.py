"""Label-smoothing softmax cross-entropy for dense prediction (and a Lovász-softmax term to add
to it); depends on torch alone.

The public names load on first use (PEP 562), so that `segls.losses.names` and
`segls.losses.rules`, which the config imports, and `LossOptions` come without torch.
"""

import importlib

_SOURCES = {
    "LabelSmoothSoftmaxCE": "module",
    "LossOptionError": "rules",
    "LossOptions": "options",
    "LovaszSoftmax": "lovasz",
    "PlusLovasz": "lovasz",
    "build_criterion": "module",
    "label_smooth_softmax_ce": "functional",
    "lovasz_softmax": "lovasz",
}
__all__ = sorted(_SOURCES)


def __getattr__(name: str) -> object:
    """A public name, imported from its module on first use."""
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_SOURCES[name]}"), name)
    globals()[name] = value
    return value
