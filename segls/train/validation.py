"""Evaluation during training: the evaluated network's scores, and their records.

The loop (`segls.train.loop`) builds one `Validation` from its run, once the checkpoint
is restored, and decides when to evaluate and which weights become best.pth.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from segls.config import Config
from segls.metrics import format_table
from segls.models import InferenceSettings
from segls.predict import evaluate, sample_panels
from segls.predict.plots import reliability_diagram
from segls.runtime import distributed
from segls.train.logger import RunLogger

__all__ = ["Validation"]


@dataclass(frozen=True)
class Validation:
    """What evaluating during training reads: the network, the data, how to predict, the records."""

    model: nn.Module  # the network evaluated: the weight average when there is one
    loader: DataLoader
    criterion: nn.Module  # the loss evaluation reports
    settings: InferenceSettings
    device: torch.device
    amp_dtype: torch.dtype | None
    cfg: Config
    logger: RunLogger

    def scores(self, iteration: int) -> dict:
        """`evaluate` the network on the validation loader and log the table."""
        data = self.cfg.data
        scores = evaluate(
            self.model, self.loader, data.num_classes, data.ignore_index, self.device,
            self.amp_dtype, self.criterion, self.cfg.eval.calibration_bins, self.settings,
        )  # fmt: skip
        table = format_table(scores, self.loader.dataset.class_names)
        self.logger.info(f"eval at iter {iteration}: val loss {scores['loss']:.4f}\n{table}")
        return scores

    def record(self, iteration: int, scores: dict) -> None:
        """Record the scores, reliability diagram and image panels of an evaluation (rank 0).

        As one unit (`RunLogger.evaluation`): the metrics.jsonl row, which tells a resumed run
        that the evaluation was done, comes after all of its TensorBoard records.
        """
        if not distributed.is_main():
            return
        data = self.cfg.data
        title = f"val reliability, iter {iteration} (ECE {100 * scores['ECE']:.2f}%)"
        images = {"val/reliability": reliability_diagram(scores["calibration"], title)}
        panels = sample_panels(
            self.model, self.loader.dataset, self.cfg.runtime.vis_samples, self.device,
            self.settings, self.amp_dtype, data.mean, data.std, data.ignore_index,
        )  # fmt: skip
        images.update((f"val/sample_{index}", image) for index, image in enumerate(panels))
        self.logger.evaluation(iteration, scores, self.loader.dataset.class_names, images)
