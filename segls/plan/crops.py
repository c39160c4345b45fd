"""How often each class is in a training crop, measured by drawing crops from the masks.

A class can be in most images yet in few crops (small objects in large images), or in few
images at all; the fingerprint's pixel shares do not say which. Drawing crops as training
will (scaling, turns, padding, the crop; on the masks only) says it directly, for plain
random crops and for class-aware ones (``data.class_crop``, `segls.data.transforms.ClassCrop`).
The rule turns class-aware crops on when some class is in too few plain crops.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segls.config import DataConfig
from segls.data import DataError, LabelMapper
from segls.data.fingerprint import Fingerprint
from segls.data.readers import read_mask
from segls.data.transforms import build_geometry
from segls.plan.rules import Choice

MAX_MASK_PIXELS = 2**26  # masks read: all, or as many, spread evenly, as hold this many pixels
CROPS = 1024  # crops drawn in all
FEW_CROPS = 0.1  # a class in fewer than this share of plain random crops is rarely seen ...
CLASS_CROP = 1 / 3  # ... so this share of crops is centred on a class (nnU-Net's 0.33) ...
LIFT = 1.5  # ... when that multiplies the least-seen class's share of crops by this much


@dataclass(frozen=True)
class Presence:
    """Per class, the share of training crops that hold at least one of its pixels."""

    plain: list[float]  # plain random crops
    planned: list[float]  # with the planned data.class_crop


def _masks(data: DataConfig, fp: Fingerprint) -> list[np.ndarray]:
    """Mapped training masks of up to MAX_MASK_PIXELS, evenly spread; unreadable ones left out."""
    records = fp.train.records
    pixels = sum(record.height * record.width for record in records)
    picked = records[:: max(1, math.ceil(pixels / MAX_MASK_PIXELS))]
    mapper, masks = LabelMapper(data), []
    for record in picked:
        try:
            masks.append(mapper(read_mask(Path(record.mask)), record.mask))
        except (DataError, OSError, ValueError):
            continue  # the fingerprint reports it
    return masks


def _presence(data: DataConfig, masks: list[np.ndarray], seed: int) -> list[float]:
    """Share of CROPS crops, drawn from `masks` in turn, that hold each class."""
    geometry = build_geometry(data)
    geometry.set_random_seed(seed)
    held = np.zeros(data.num_classes, dtype=np.int64)
    for index in range(CROPS):
        mask = masks[index % len(masks)]
        crop = geometry(image=np.zeros(mask.shape, dtype=np.uint8), mask=mask)["mask"]
        counts = np.bincount(crop.ravel(), minlength=data.num_classes)[: data.num_classes]
        held += counts > 0
    return (held / CROPS).tolist()


def class_crop(data: DataConfig, fp: Fingerprint) -> tuple[Choice, Presence | None]:
    """``data.class_crop``: CLASS_CROP when it lifts a class that is in few random crops.

    On when some training class is in under FEW_CROPS of plain random crops and class-aware
    crops raise the least-seen such class's share by at least LIFT; a class held by few
    images stays rare in the crops whatever the crop, and the report says so instead. The
    masks are read once; plain and class-aware crops are drawn from them with one seed.
    """
    masks = _masks(data, fp)
    if not masks:
        return Choice("data.class_crop", 0.0, "no training mask could be read"), None
    plain = _presence(dataclasses.replace(data, class_crop=0.0), masks, seed=0)
    in_training = fp.class_table(fp.train_split)["pixels"] > 0
    few = [index for index, share in enumerate(plain)
           if in_training[index] and share < FEW_CROPS]  # fmt: skip
    if not few:
        why = f"every class is in at least {FEW_CROPS:.0%} of random crops"
        return Choice("data.class_crop", 0.0, why), Presence(plain, plain)
    trial = _presence(dataclasses.replace(data, class_crop=CLASS_CROP), masks, seed=0)
    lifted = [f"{fp.class_names[i]!r} {plain[i]:.0%} -> {trial[i]:.0%}" for i in few]
    least = min(few, key=lambda index: plain[index])
    if trial[least] < LIFT * plain[least]:
        why = (f"class-aware crops would lift the classes in few random crops only a little "
               f"({', '.join(lifted)}): they are in few images")  # fmt: skip
        return Choice("data.class_crop", 0.0, why), Presence(plain, plain)
    why = (f"{CLASS_CROP:.0%} of crops centred on a pixel of a class drawn from those in the "
           f"image (nnU-Net's foreground oversampling): share of crops {', '.join(lifted)}")  # fmt: skip
    return Choice("data.class_crop", round(CLASS_CROP, 4), why), Presence(plain, trial)


def presence_notes(fp: Fingerprint, presence: Presence | None) -> list[str]:
    """Classes the run will rarely see: absent from validation, or in few planned crops."""
    notes = []
    val_pixels = fp.class_table(fp.val_split)["pixels"]
    train_pixels = fp.class_table(fp.train_split)["pixels"]
    for index, name in enumerate(fp.class_names):
        if fp.val is not fp.train and train_pixels[index] > 0 and val_pixels[index] == 0:
            notes.append(f"class {index} {name!r} is absent from the validation split: its IoU "
                         "is not measured (mIoU averages the classes present)")  # fmt: skip
        if presence is not None and train_pixels[index] > 0:
            share = presence.planned[index]
            if share < FEW_CROPS:
                notes.append(f"class {index} {name!r} is in {share:.0%} of the planned crops: "
                             "most batches will not hold it; add examples or larger crops")  # fmt: skip
    return notes
