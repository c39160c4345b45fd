"""segls: semantic-segmentation training built around an exact label-smoothing cross-entropy.

`ConfigError` is defined here, below every package, because both `segls.config` (a bad value
in a file) and `segls.runtime` (a value this machine cannot honour, such as fp16 on a CPU)
raise it; import it from `segls.config`. `NonFiniteError` is here for the same reason:
training (`segls.train.faults`) and evaluation (`segls.predict`) both raise it.
"""

__version__ = "0.1.0"


class ConfigError(ValueError):
    """A config file, override or value that cannot be used; the message says where and why."""


class NonFiniteError(RuntimeError):
    """Losses, gradients, weights or predictions that are no longer finite; the message says where."""
