"""Segmentation and calibration scores, summed over batches and processes; torch only.

Nothing here imports the rest of segls, so other codebases can use the package alone.
`segmentation` holds the confusion matrix and the scores computed from it, `calibration` the
calibration scores (ECE, NLL, Brier), `streaming` the sums both keep across batches.
"""

from segls.metrics.calibration import (
    CalibrationMetrics,
    calibration_from_stats,
    calibration_stats,
)
from segls.metrics.segmentation import (
    SegMetrics,
    confusion_matrix,
    format_table,
    scores_from_confusion,
)

__all__ = [
    "CalibrationMetrics",
    "SegMetrics",
    "calibration_from_stats",
    "calibration_stats",
    "confusion_matrix",
    "format_table",
    "scores_from_confusion",
]
