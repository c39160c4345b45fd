"""The model for inference from a checkpoint: what tools/test.py, infer.py and export.py share.

Imported once the command's config has loaded (`segls.cli.common`): this module brings torch.
"""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple

import torch
from torch import nn

from segls import runtime
from segls.config import Config
from segls.models import InferenceSettings, build_model, settings_from_config
from segls.models.checkpoint import load_weights

__all__ = ["InferenceSetup", "load_model", "setup_inference"]


def load_model(
    cfg: Config, checkpoint_path: str | os.PathLike, device: torch.device | str
) -> tuple[nn.Module, str]:
    """The config's model with the checkpoint's weights, in eval mode on `device`.

    Returns the model and which weights were loaded ("ema", "model" or "state_dict"; see
    `segls.models.checkpoint.load_weights`). No pretrained encoder file is read: the checkpoint
    holds every weight.
    """
    model_cfg = dataclasses.replace(cfg.model, encoder_weights=None)
    model = build_model(model_cfg, cfg.data.in_channels, cfg.data.num_classes, cfg.loss.upsample)
    source = load_weights(model, checkpoint_path)
    return model.to(device).eval(), source


class InferenceSetup(NamedTuple):
    """What tools/test.py and tools/infer.py build from their arguments before predicting."""

    cfg: Config
    device: torch.device
    amp_dtype: torch.dtype | None
    settings: InferenceSettings
    model: nn.Module
    weights: str


def setup_inference(cfg: Config, checkpoint_path: str | os.PathLike) -> InferenceSetup:
    """Device, amp, inference mode and the checkpoint's model for a loaded config."""
    device = runtime.configure(cfg.runtime)
    amp_dtype = runtime.amp_dtype(cfg.runtime.amp, device)
    settings = settings_from_config(cfg)
    model, weights = load_model(cfg, checkpoint_path, device)
    return InferenceSetup(cfg, device, amp_dtype, settings, model, weights)
