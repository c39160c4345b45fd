"""Datasets and data loaders: folder, PASCAL VOC, Cityscapes and ADE20K layouts.

`readers` reads image and mask files, `layouts` finds them for each dataset format,
`classes` names and colours the classes, `transforms` crops, flips and normalises,
`datasets` pairs it all into a Dataset, `loaders` batches it (seeded, resumable, sharded).
`sample` prepares the bundled microscopy sample and `stats` computes ``data.mean``/``std``.
"""

from __future__ import annotations

from segls.lazy import lazy_exports

# Loaded on first use, so that the config's import of `segls.data.names` stays light.
_SOURCES = {
    "LAYOUTS": "layouts",
    "DataError": "readers",
    "InfiniteLoader": "loaders",
    "LabelMapper": "datasets",
    "NormalisedImage": "transforms",
    "SegDataset": "datasets",
    "SegTransform": "transforms",
    "ShardSampler": "loaders",
    "augmentation_seed": "loaders",
    "bit_palette": "classes",
    "build_dataloader": "loaders",
    "build_dataset": "datasets",
    "build_loaders": "loaders",
    "build_transform": "transforms",
    "channel_stats": "stats",
    "read_image": "readers",
    "read_mask": "readers",
    "resolve_classes": "classes",
    "check_crop_size": "loaders",
    "check_first_batch": "loaders",
    "batch_image_names": "loaders",
    "build_val_loader": "loaders",
    "shut_down": "loaders",
}
__all__ = sorted(_SOURCES)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _SOURCES)
