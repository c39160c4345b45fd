"""The experiment schema: one typed dataclass per config section, with every default.

configs/README.md documents each key; `segls.config.checks` says which values are allowed.
The loss's default smoothing is the loss's own (`segls.losses.names.DEFAULT_LB_SMOOTH`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from segls.losses.names import DEFAULT_LB_SMOOTH

__all__ = [
    "OPTIMIZER_TYPES",
    "Config",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "RuntimeConfig",
    "ScheduleConfig",
]


@dataclass
class DataConfig:
    """Dataset location and format, classes, normalisation, augmentation and loading."""

    format: str = "folder"
    root: str = "data/scratch_assay"
    train_split: str = "train"
    val_split: str = "val"
    num_classes: int = 3
    class_names: list[str] = field(default_factory=list)
    palette: list[list[int]] = field(default_factory=list)
    in_channels: int = 3
    scaling: str = "dtype"
    percentiles: list[float] = field(default_factory=lambda: [1.0, 99.8])
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    ignore_index: int = 255
    reduce_zero_label: bool = False
    cityscapes_labels: str = "labelTrainIds"
    crop_size: list[int] = field(default_factory=lambda: [512, 512])
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    hflip: float = 0.5
    vflip: float = 0.0
    rotate90: float = 0.0
    photometric: float = 0.0
    class_crop: float = 0.0
    batch_size: int = 8
    val_batch_size: int = 1
    repeat: int = 1
    num_workers: int = 2
    cache: bool = False


@dataclass
class ModelConfig:
    """Which segmentation-models-pytorch architecture and encoder to build."""

    arch: str = "Unet"
    encoder: str = "resnet18"
    encoder_weights: str | None = None
    kwargs: dict = field(default_factory=dict)


@dataclass
class LossConfig:
    """Settings of the label-smoothing softmax cross-entropy (and an optional Lovász term)."""

    lb_smooth: float = DEFAULT_LB_SMOOTH
    lb_pos: float | None = None
    lb_neg: float | None = None
    class_weight: list[float] | None = None
    backend: str = "auto"
    check_labels: bool = True
    lovasz_weight: float = 0.0
    upsample: str = "outside"


# optimizer.type: segls.train.optim builds these (it sits above the config, so they live here).
OPTIMIZER_TYPES = ("adamw", "sgd")


@dataclass
class OptimizerConfig:
    """Optimizer type and hyper-parameters."""

    type: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float | None = None
    ema_decay: float | None = None
    max_nonfinite_steps: int = 20


@dataclass
class ScheduleConfig:
    """Iteration budget, warm-up, poly learning-rate decay and the evaluate/save/log cadence."""

    max_iters: int = 1000
    warmup_iters: int = 0
    warmup_ratio: float = 0.1
    cooldown_iters: int = 0
    power: float = 0.9
    min_lr: float = 0.0
    eval_interval: int = 200
    checkpoint_interval: int = 200
    log_interval: int = 20


@dataclass
class RuntimeConfig:
    """Device, precision, seeding and threading."""

    device: str = "auto"
    amp: str = "off"
    channels_last: bool = False
    compile: bool = False
    seed: int = 0
    deterministic: bool = False
    num_threads: int = 0
    vis_samples: int = 2
    sync_bn: bool = False


@dataclass
class EvalConfig:
    """How validation and tools/test.py predict: whole image or sliding window, flip, scales."""

    mode: str = "whole"
    crop_size: list[int] = field(default_factory=list)
    stride: list[int] = field(default_factory=list)
    flip: bool = False
    scales: list[float] = field(default_factory=lambda: [1.0])
    calibration_bins: int = 15


@dataclass
class Config:
    """A whole experiment: its name, then one section per concern.

    ``name`` names the default work dir (work_dirs/<name>); "" means the config file's stem.
    tools/train.py writes the name it used into the work dir's config.yaml, so a run started
    from that file keeps its name.
    """

    name: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
