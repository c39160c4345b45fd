"""segls: semantic-segmentation training built around an exact label-smoothing cross-entropy."""

__version__ = "0.1.0"
