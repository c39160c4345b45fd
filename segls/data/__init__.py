"""Datasets and data loaders: folder, PASCAL VOC, Cityscapes and ADE20K layouts.

`readers` reads image and mask files, `layouts` finds them for each dataset format,
`classes` names and colours the classes, `transforms` crops, flips and normalises,
`datasets` pairs it all into a Dataset, `loaders` batches it (seeded, resumable, sharded).
`sample` prepares the bundled microscopy sample and `stats` computes ``data.mean``/``std``.
"""

from __future__ import annotations

from segls.data.classes import bit_palette, resolve_classes
from segls.data.datasets import LabelMapper, SegDataset, build_dataset
from segls.data.layouts import LAYOUTS
from segls.data.loaders import (
    InfiniteLoader,
    ShardSampler,
    augmentation_seed,
    build_dataloader,
    build_loaders,
)
from segls.data.readers import DataError, read_image, read_mask
from segls.data.stats import channel_stats
from segls.data.transforms import SegTransform, build_transform

__all__ = [
    "LAYOUTS",
    "DataError",
    "InfiniteLoader",
    "LabelMapper",
    "SegDataset",
    "SegTransform",
    "ShardSampler",
    "augmentation_seed",
    "bit_palette",
    "build_dataloader",
    "build_dataset",
    "build_loaders",
    "build_transform",
    "channel_stats",
    "read_image",
    "read_mask",
    "resolve_classes",
]
