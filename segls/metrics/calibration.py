"""Pixel-level calibration: expected calibration error, negative log-likelihood and Brier score.

Label smoothing exists to make a model less over-confident; these scores show whether it did.
Imports torch only. For every valid pixel (label not
``ignore_index``) with softmax probabilities ``p`` over C classes and label ``y``:

- top-label confidence ``conf = max_c p_c``, prediction ``argmax_c p_c``, correct or not;
- ``NLL = -log p_y`` (natural log), ``Brier = sum_c (p_c - [c == y])**2`` (in [0, 2]);
- pixels go into ``num_bins`` equal-width confidence bins, bin ``b`` holding
  ``b / B < conf <= (b + 1) / B``; with ``n_b`` pixels, mean confidence ``conf_b`` and
  accuracy ``acc_b`` in bin ``b`` and ``N`` pixels in all,
  ``ECE = sum_b n_b / N * |acc_b - conf_b|`` (top-label ECE, Guo et al. 2017).

NLL and Brier are means over the valid pixels. With no valid pixel every score is NaN.
The statistics are sums (float64), so batches and processes add up exactly as the
confusion matrix does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from segls.metrics.streaming import StreamingSum

__all__ = ["CalibrationMetrics", "calibration_from_stats", "calibration_stats"]

_DEFAULT_BINS = 15


def _check_inputs(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> None:
    """Raise ValueError naming the problem if `logits`/`labels` cannot be scored."""
    if logits.ndim != labels.ndim + 1 or logits.ndim < 2:
        raise ValueError(
            f"logits of shape {tuple(logits.shape)} should have one more dim (the classes, "
            f"dim 1) than labels of shape {tuple(labels.shape)}"
        )
    if logits.shape[:1] + logits.shape[2:] != labels.shape:
        raise ValueError(
            f"logits shape {tuple(logits.shape)} does not match labels shape "
            f"{tuple(labels.shape)} outside the class dim"
        )
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point, got dtype {logits.dtype}")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must hold integer class indices, got dtype {labels.dtype}")
    if logits.device != labels.device:
        raise ValueError(
            f"logits are on {logits.device} but labels on {labels.device}; move both to one device"
        )
    num_classes = logits.shape[1]
    valid = labels != ignore_index
    bad = valid & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        shown = torch.unique(labels[bad])[:10].tolist()
        raise ValueError(
            f"labels hold values {shown} outside [0, {num_classes}) that are not "
            f"ignore_index={ignore_index}; fix num_classes, ignore_index or the masks"
        )


def calibration_stats(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_bins: int = _DEFAULT_BINS,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Sums for the calibration scores of one batch, as a float64 vector of 3·B + 2 values.

    Layout: per-bin pixel counts (B), per-bin confidence sums (B), per-bin correct counts (B),
    then the NLL sum and the Brier sum. Logits are N×C×... (classes on dim 1), labels N×...;
    the softmax is taken in float32 (or float64 for float64 logits).
    """
    _check_num_bins(num_bins)
    _check_inputs(logits, labels, ignore_index)
    compute_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    log_probs = F.log_softmax(logits.to(compute_dtype), dim=1)
    valid = labels != ignore_index
    target = torch.where(valid, labels, torch.zeros_like(labels)).long()
    log_p_true = log_probs.gather(1, target.unsqueeze(1)).squeeze(1)[valid]
    probs = log_probs.exp_()
    confidence, prediction = probs.max(dim=1)
    squares = probs.square_().sum(dim=1)  # sum_c p_c^2; probs is spent after this line
    confidence, prediction = confidence[valid], prediction[valid]
    correct = (prediction == labels[valid].long()).double()
    confidence = confidence.double()
    p_true = log_p_true.double().exp()
    brier = squares[valid].double() - 2 * p_true + 1
    bins = (confidence * num_bins).ceil().long().sub_(1).clamp_(0, num_bins - 1)
    ones = torch.ones_like(confidence)
    stats = torch.zeros(3 * num_bins + 2, dtype=torch.float64, device=logits.device)
    stats[:num_bins].index_add_(0, bins, ones)
    stats[num_bins : 2 * num_bins].index_add_(0, bins, confidence)
    stats[2 * num_bins : 3 * num_bins].index_add_(0, bins, correct)
    stats[-2] = -log_p_true.double().sum()
    stats[-1] = brier.sum()
    return stats


def calibration_from_stats(stats: torch.Tensor, num_bins: int = _DEFAULT_BINS) -> dict:
    """ECE, NLL, Brier and the per-bin table from the sums of `calibration_stats`.

    Returns Python floats ``ECE``, ``NLL``, ``Brier`` and ``calibration``: a dict with
    ``num_bins``, ``count`` (ints), ``confidence`` and ``accuracy`` (per-bin means, NaN for an
    empty bin).
    """
    _check_num_bins(num_bins)
    if stats.shape != (3 * num_bins + 2,):
        raise ValueError(
            f"stats of shape {tuple(stats.shape)} do not hold {num_bins} bins "
            f"(expected {3 * num_bins + 2} values)"
        )
    stats = stats.detach().to(device="cpu", dtype=torch.float64)
    counts = stats[:num_bins]
    confidence = stats[num_bins : 2 * num_bins] / counts
    accuracy = stats[2 * num_bins : 3 * num_bins] / counts
    total = float(counts.sum())
    if total == 0:
        ece = nll = brier = math.nan
    else:
        gaps = torch.where(counts > 0, (accuracy - confidence).abs() * counts, 0.0)
        ece = float(gaps.sum()) / total
        nll, brier = float(stats[-2]) / total, float(stats[-1]) / total
    return {
        "ECE": ece,
        "NLL": nll,
        "Brier": brier,
        "calibration": {
            "num_bins": num_bins,
            "count": [int(round(count)) for count in counts.tolist()],
            "confidence": confidence.tolist(),
            "accuracy": accuracy.tolist(),
        },
    }


def _check_num_bins(num_bins: int) -> None:
    """Raise unless `num_bins` is a positive int."""
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive int, got {num_bins!r}")


class CalibrationMetrics:
    """Streaming calibration sums over batches; scores on demand (see the module docstring).

    Like `segls.metrics.SegMetrics`: the sums live on the device of the first batch (or
    `device`), `compute()` scores this process's pixels and `compute(sync=True)`, called on
    every rank, those of all ranks, without changing the local sums.
    """

    def __init__(
        self,
        num_bins: int = _DEFAULT_BINS,
        ignore_index: int = 255,
        device: torch.device | str | None = None,
    ) -> None:
        _check_num_bins(num_bins)
        self.num_bins = num_bins
        self.ignore_index = ignore_index
        self._sums = StreamingSum((3 * num_bins + 2,), torch.float64, device)

    @property
    def device(self) -> torch.device | None:
        """Where the sums are kept (None: on the device of the first batch)."""
        return self._sums.device

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch of N×C×H×W logits and N×H×W labels."""
        self._sums.add(calibration_stats(logits, labels, self.num_bins, self.ignore_index))

    def reset(self) -> None:
        """Forget all sums."""
        self._sums.reset()

    @property
    def stats(self) -> torch.Tensor:
        """A copy of this process's sums (layout of `calibration_stats`)."""
        return self._sums.value

    def reduce_across_processes(self) -> torch.Tensor:
        """The sums over all processes (all_reduce SUM); every rank must call it."""
        return self._sums.reduce_across_processes()

    def compute(self, sync: bool = False) -> dict:
        """Scores (see `calibration_from_stats`) of the local sums, or all ranks' if `sync`."""
        stats = self.reduce_across_processes() if sync else self.stats
        return calibration_from_stats(stats, self.num_bins)
