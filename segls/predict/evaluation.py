"""Evaluation: a model's scores and loss over a validation loader, and panels to look at."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from segls import NonFiniteError, losses
from segls.config import Config
from segls.data import batch_image_names
from segls.losses import LabelSmoothSoftmaxCE, LossOptions
from segls.metrics import CalibrationMetrics, SegMetrics
from segls.models import InferenceSettings, predict_logits
from segls.predict.pictures import panel
from segls.runtime import distributed, progress

__all__ = [
    "build_criterion",
    "evaluate",
    "nonfinite_cause",
    "nonfinite_prediction",
    "sample_panels",
]


def build_criterion(cfg: Config) -> LabelSmoothSoftmaxCE:
    """The label-smoothing cross-entropy configured by ``loss`` and ``data.ignore_index``.

    The loss evaluation reports; training minimises it too, plus the Lovász term when set
    (`segls.train.build.build_objective`). Built by `segls.losses.build_criterion` from the
    options `segls.losses.LossOptions.from_settings` makes (an explicit lb_pos/lb_neg pair
    replaces lb_smooth).
    """
    loss = cfg.loss
    options = LossOptions.from_settings(
        loss.lb_smooth,
        loss.lb_pos,
        loss.lb_neg,
        weight=loss.class_weight,
        ignore_index=cfg.data.ignore_index,
        check_labels=loss.check_labels,
    )
    return losses.build_criterion(options, backend=loss.backend)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    ignore_index: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    criterion: nn.Module | None = None,
    calibration_bins: int = 15,
    settings: InferenceSettings | None = None,
) -> dict:
    """Scores over `loader`: `segls.metrics.scores_from_confusion`'s, calibration and loss.

    Calibration (``ECE``, ``NLL``, ``Brier`` and the per-bin ``calibration`` table over
    `calibration_bins` bins) is `segls.metrics.CalibrationMetrics`'. ``loss`` is the
    criterion's mean over every valid pixel of the set (each batch weighted by its loss
    denominator), NaN without a criterion. `settings` is the inference mode
    (`segls.models.inference`; default: the whole image) and `amp_dtype` the autocast dtype
    (None: float32). The model is left in eval mode. In a process group every rank must call
    this on its own shard of the set (`segls.data.ShardSampler`): the counts and sums of all
    ranks are added up, so all ranks return the whole set's scores.

    A prediction holding NaN or inf is never scored: evaluation stops, on every rank, with a
    NonFiniteError naming the image (`nonfinite_prediction`).
    """
    model.eval()
    metrics = SegMetrics(num_classes, ignore_index)
    calibration = CalibrationMetrics(calibration_bins, ignore_index)
    loss_sum, loss_denominator = 0.0, 0.0
    problem = None
    bar = progress(len(loader), "val", leave=False)
    for number, (images, labels) in enumerate(loader):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        logits = predict_logits(model, images, labels.shape[-2:], settings, amp_dtype)
        problem = nonfinite_prediction(logits, images, partial(batch_image_names, loader, number))
        if problem:
            break
        metrics.update(logits, labels)
        calibration.update(logits, labels)
        if criterion is not None:
            valid_mask = labels != ignore_index
            weight = getattr(criterion, "weight", None)
            if weight is None:
                denominator = valid_mask.sum()
            else:
                denominator = weight.to(device)[labels[valid_mask]].sum()
            loss_sum += float(criterion(logits, labels) * denominator)
            loss_denominator += float(denominator)
        bar.update(1)
    bar.close()
    if distributed.all_reduce_max(torch.tensor(int(problem is not None))).item():
        raise NonFiniteError(problem or "another process stopped evaluation (see its message)")
    scores = metrics.compute(sync=True)
    scores.update(calibration.compute(sync=True))
    loss_sum, loss_denominator = distributed.all_reduce_sum([loss_sum, loss_denominator])
    has_loss = criterion is not None and loss_denominator > 0
    scores["loss"] = loss_sum / loss_denominator if has_loss else math.nan
    return scores


def nonfinite_prediction(
    logits: torch.Tensor, images: torch.Tensor, names: Callable[[], list[str] | None]
) -> str | None:
    """Why a batch's prediction must not be scored (its logits hold NaN/inf), naming the
    images; None when every logit is finite (one host sync). `names()` gives the batch's
    image files, or None when unknown.
    """
    finite = torch.isfinite(logits).flatten(1).all(dim=1)
    if bool(finite.all()):
        return None
    positions = (~finite).nonzero().flatten().tolist()
    known = names()
    shown = [known[p] if known else f"image {p} of the batch" for p in positions]
    cause = nonfinite_cause(bool(torch.isfinite(images[positions[0]]).all()))
    return f"the prediction for {', '.join(shown)} holds NaN or inf and was not scored: {cause}"


def nonfinite_cause(image_is_finite: bool) -> str:
    """Why a prediction holds NaN or inf, and what to do, given whether its input was finite."""
    if not image_is_finite:
        return (
            "its pixels hold NaN or inf after reading and scaling (with data.scaling="
            "percentile one NaN pixel spreads over the whole image); fix or remove the image"
        )
    return (
        "the image is finite, so the model's output is not: weights holding inf/NaN, or an "
        "overflow under runtime.amp=fp16 (try bf16 or off)"
    )


@torch.no_grad()
def sample_panels(
    model: nn.Module,
    dataset: Dataset,
    count: int,
    device: torch.device,
    settings: InferenceSettings,
    amp_dtype: torch.dtype | None,
    mean: Sequence[float],
    std: Sequence[float],
    ignore_index: int = 255,
) -> list[torch.Tensor]:
    """Captioned panels (`segls.predict.pictures.panel`) of the first `count` images of `dataset`."""
    panels, names = [], getattr(dataset, "class_names", None)
    model.eval()
    for index in range(min(count, len(dataset))):
        image, label = dataset[index]
        images = image[None].to(device)
        logits = predict_logits(model, images, label.shape[-2:], settings, amp_dtype)
        prediction = logits.argmax(dim=1)[0].cpu()
        shown = panel(image, label, prediction, dataset.palette, mean, std, ignore_index, names)
        panels.append(shown)
    return panels
