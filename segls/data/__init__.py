"""Datasets and data loaders: folder, PASCAL VOC, Cityscapes and ADE20K layouts."""

from __future__ import annotations

import importlib
import random
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from segls.data.classes import bit_palette, resolve_classes
from segls.data.datasets import LabelMapper, SegDataset, build_dataset
from segls.data.io import DataError, read_image, read_mask
from segls.data.transforms import SegTransform, build_transform

if TYPE_CHECKING:
    from segls.config import DataConfig

__all__ = [
    "DataError",
    "LabelMapper",
    "SegDataset",
    "SegTransform",
    "bit_palette",
    "build_dataloader",
    "build_dataset",
    "build_transform",
    "read_image",
    "read_mask",
    "resolve_classes",
    "seed_worker",
]


def seed_worker(worker_id: int) -> None:
    """Seed numpy, random and the dataset's augmentations from this worker's torch seed.

    Torch gives each worker ``base_seed + worker_id`` with ``base_seed`` drawn from the
    loader's generator, so a seeded generator makes every worker stream reproducible.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    info = torch.utils.data.get_worker_info()
    dataset = info.dataset if info is not None else None
    while dataset is not None and not hasattr(dataset, "reseed"):
        dataset = getattr(dataset, "dataset", None)
    if dataset is not None:
        dataset.reseed(seed)


def build_dataloader(
    data_cfg: DataConfig,
    split: str,
    train: bool,
    seed: int = 0,
    sampler: Sampler | None = None,
    dataset: SegDataset | None = None,
) -> DataLoader:
    """DataLoader over `dataset`, by default ``build_dataset(data_cfg, split, train, seed)``.

    Training: ``batch_size``, shuffled (unless a sampler is given), last partial batch
    dropped, workers seeded from ``seed``. Validation: ``val_batch_size``, in order. Pass
    `dataset` when it is built already (e.g. to make the `sampler` from it).
    """
    if dataset is None:
        dataset = build_dataset(data_cfg, split, train, seed=seed)
    batch_size = data_cfg.batch_size if train else data_cfg.val_batch_size
    num_items = len(dataset) if sampler is None or not hasattr(sampler, "__len__") else len(sampler)
    if train and num_items < batch_size:
        raise DataError(
            f"split {split!r} of {data_cfg.root} gives {num_items} samples per epoch, fewer than "
            f"data.batch_size={batch_size}, so every batch would be dropped; lower "
            "data.batch_size, or raise data.repeat to draw several crops of each image per epoch"
        )
    generator = torch.Generator()
    generator.manual_seed(seed)
    num_workers = int(data_cfg.num_workers)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        drop_last=train,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


def __getattr__(name: str) -> ModuleType:
    """Import ``segls.data.sample`` on first access rather than with the package."""
    if name == "sample":
        return importlib.import_module("segls.data.sample")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
