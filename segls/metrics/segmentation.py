"""Semantic-segmentation metrics: a confusion matrix and the scores computed from it.

The maths are pure functions (`confusion_matrix`, `scores_from_confusion`); `SegMetrics` only
adds them up over batches and, when asked, across processes
(`segls.metrics.streaming.StreamingSum`).

Definitions, for class c with confusion matrix ``cm`` (rows = label, columns = prediction),
``tp = cm[c, c]``, ``label_area = cm[c, :].sum()`` and ``pred_area = cm[:, c].sum()``;
they follow mmsegmentation's ``IoUMetric``:

- ``IoU = tp / (label_area + pred_area - tp)``, ``Acc = tp / label_area`` (per-class recall),
  ``Dice = 2 * tp / (label_area + pred_area)``; ``aAcc = trace(cm) / cm.sum()``.
- A class absent from both the labels and the predictions gets NaN for IoU, Acc and Dice.
- A class predicted somewhere but absent from the labels gets IoU 0 and Dice 0 (every
  prediction of it is a false positive) and Acc NaN (there is no pixel of it to recall).
- ``mIoU``, ``mAcc`` and ``mDice`` are means over the classes whose score is not NaN. So a
  class absent from both sides is left out of all three means, and a predicted-only class
  counts as 0 in mIoU and mDice but is left out of mAcc.
- With no valid pixel at all (everything ignored) every score is NaN.
"""

from __future__ import annotations

import math

import torch

from segls.metrics.streaming import StreamingSum

__all__ = ["SegMetrics", "confusion_matrix", "format_table", "scores_from_confusion"]

_MAX_VALUES_SHOWN = 10


def _check_num_classes(num_classes: int) -> None:
    """Raise if `num_classes` is not a positive int."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")


def _shown_values(values: torch.Tensor) -> str:
    """The distinct values of `values`, a few of them, as text for an error message."""
    distinct = torch.unique(values).tolist()
    shown = ", ".join(str(v) for v in distinct[:_MAX_VALUES_SHOWN])
    if len(distinct) > _MAX_VALUES_SHOWN:
        shown += f", ... ({len(distinct)} distinct)"
    return shown


def confusion_matrix(
    preds: torch.Tensor, labels: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """Count (label, prediction) pairs over the pixels whose label is not `ignore_index`.

    `preds` holds class indices shaped like `labels` (any integer dtype), or logits with one more
    dimension, the classes on dim 1 (N×C×H×W for N×H×W labels), which are reduced by argmax.
    Returns an int64 `num_classes`×`num_classes` tensor on the inputs' device, rows = label,
    columns = prediction. Predictions at ignored pixels are not looked at.
    """
    _check_num_classes(num_classes)
    if preds.device != labels.device:
        raise ValueError(
            f"preds are on {preds.device} but labels on {labels.device}; move both to one device"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must hold integer class indices, got dtype {labels.dtype}")
    if preds.ndim == labels.ndim + 1:
        if preds.ndim < 2 or preds.shape[1] != num_classes:
            raise ValueError(
                f"logits of shape {tuple(preds.shape)} should have num_classes={num_classes} "
                f"channels on dim 1 for labels of shape {tuple(labels.shape)}"
            )
        preds = preds.argmax(dim=1)
    elif preds.is_floating_point() or preds.is_complex():
        raise ValueError(
            f"preds of dtype {preds.dtype} and shape {tuple(preds.shape)} are neither class "
            f"indices (an integer dtype) nor logits (one more dim than labels "
            f"{tuple(labels.shape)}); pass preds.argmax(1) or the logits themselves"
        )
    if preds.shape != labels.shape:
        raise ValueError(
            f"preds shape {tuple(preds.shape)} does not match labels shape {tuple(labels.shape)}; "
            "pass class indices shaped like the labels or logits N×C×H×W"
        )

    labels = labels.long()
    preds = preds.long()
    valid_mask = labels != ignore_index
    bad_labels = valid_mask & ((labels < 0) | (labels >= num_classes))
    bad_preds = valid_mask & ((preds < 0) | (preds >= num_classes))
    any_bad_labels, any_bad_preds = torch.stack([bad_labels.any(), bad_preds.any()]).tolist()
    if any_bad_labels:
        raise ValueError(
            f"labels hold values {_shown_values(labels[bad_labels])} outside [0, {num_classes}) "
            f"that are not ignore_index={ignore_index}; fix num_classes, ignore_index or the masks"
        )
    if any_bad_preds:
        raise ValueError(
            f"preds hold values {_shown_values(preds[bad_preds])} outside [0, {num_classes}) "
            "at labelled pixels; pass class indices in range or logits with num_classes channels"
        )

    pair_index = labels[valid_mask] * num_classes + preds[valid_mask]
    counts = torch.bincount(pair_index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def scores_from_confusion(cm: torch.Tensor) -> dict:
    """Overall and per-class scores from a confusion matrix (rows = label, columns = prediction).

    Returns Python floats: aAcc, mIoU, mAcc, mDice, and lists IoU, Acc, Dice with one entry per
    class. NaN marks an undefined score and is left out of the means; see the module docstring.
    """
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square C×C, got shape {tuple(cm.shape)}")
    if cm.is_complex():
        raise ValueError(f"confusion matrix must be real, got dtype {cm.dtype}")
    cm = cm.detach().to(device="cpu", dtype=torch.float64)
    if bool((cm < 0).any()):
        raise ValueError("confusion matrix has negative counts; it should hold pixel counts")

    true_pos = cm.diagonal()
    label_area = cm.sum(dim=1)
    pred_area = cm.sum(dim=0)
    iou = true_pos / (label_area + pred_area - true_pos)
    acc = true_pos / label_area
    dice = 2 * true_pos / (label_area + pred_area)
    return {
        "aAcc": (true_pos.sum() / cm.sum()).item(),
        "mIoU": torch.nanmean(iou).item(),
        "mAcc": torch.nanmean(acc).item(),
        "mDice": torch.nanmean(dice).item(),
        "IoU": iou.tolist(),
        "Acc": acc.tolist(),
        "Dice": dice.tolist(),
    }


class SegMetrics:
    """Streaming confusion matrix over batches, with scores on demand.

    The matrix is created on the first `update` on the device of its inputs, or on `device`
    when given. `compute()` scores this process's counts only; in distributed evaluation call
    `compute(sync=True)` on every rank, which sums the counts of all ranks. Syncing never
    changes the local counts, so calling it twice does not count anything twice.
    """

    def __init__(
        self, num_classes: int, ignore_index: int = 255, device: torch.device | str | None = None
    ) -> None:
        _check_num_classes(num_classes)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._counts = StreamingSum((num_classes, num_classes), torch.int64, device)

    @property
    def device(self) -> torch.device | None:
        """Where the counts are kept (None: on the device of the first batch)."""
        return self._counts.device

    def update(self, preds: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch: class indices or N×C×H×W logits, and labels (see `confusion_matrix`)."""
        self._counts.add(confusion_matrix(preds, labels, self.num_classes, self.ignore_index))

    def reset(self) -> None:
        """Forget all counts."""
        self._counts.reset()

    @property
    def confusion(self) -> torch.Tensor:
        """A copy of this process's int64 C×C counts (rows = label, columns = prediction)."""
        return self._counts.value

    def reduce_across_processes(self) -> torch.Tensor:
        """The counts summed over all processes (all_reduce SUM); the local counts stay as they are.

        Every rank must call it, including ranks that saw no batch. Without an initialised
        process group (or with one process) it returns a copy of the local counts.
        """
        return self._counts.reduce_across_processes()

    def compute(self, sync: bool = False) -> dict:
        """Scores (see `scores_from_confusion`) of the local counts, or of all ranks' if `sync`."""
        cm = self.reduce_across_processes() if sync else self.confusion
        return scores_from_confusion(cm)


def _percent(value: float) -> str:
    """A score as a percentage with 2 decimals, or "-" when it is NaN."""
    return "-" if math.isnan(value) else f"{100 * value:.2f}"


def format_table(scores: dict, class_names: list[str]) -> str:
    """Fixed-width text table of per-class IoU/Acc/Dice in percent, then a summary line.

    When `scores` hold calibration (``ECE``, ``NLL``, ``Brier``), a second summary line shows
    ECE in percent and NLL and Brier as they are.
    """
    num_classes = len(scores["IoU"])
    if len(class_names) != num_classes:
        raise ValueError(
            f"got {len(class_names)} class names for {num_classes} classes in the scores; "
            "pass one name per class"
        )
    name_width = max([len("Class"), *(len(name) for name in class_names)])
    lines = [f"{'Class':<{name_width}}  {'IoU':>7}  {'Acc':>7}  {'Dice':>7}"]
    for index, name in enumerate(class_names):
        cells = [_percent(scores[key][index]) for key in ("IoU", "Acc", "Dice")]
        lines.append(f"{name:<{name_width}}  " + "  ".join(f"{cell:>7}" for cell in cells))
    lines.append("-" * len(lines[0]))
    lines.append(
        "  ".join(f"{key}: {_percent(scores[key])}" for key in ("aAcc", "mIoU", "mAcc", "mDice"))
    )
    if all(key in scores for key in ("ECE", "NLL", "Brier")):
        nll, brier = (
            "-" if math.isnan(scores[key]) else f"{scores[key]:.4f}" for key in ("NLL", "Brier")
        )
        lines.append(f"ECE: {_percent(scores['ECE'])}  NLL: {nll}  Brier: {brier}")
    return "\n".join(lines)
