"""What a dataset holds before anything is read: its splits, image/mask pairs and pairing problems.

`survey` pairs images and masks as training will (`segls.data.layouts`) but collects what
training would stop at (images without masks, masks without images, empty splits) as
`Problem`s, so one run reports all of them. Without a validation split it proposes a
deterministic one (`propose_split`) and says so.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from segls.data.layouts import LAYOUTS, files_by_stem
from segls.data.names import CITYSCAPES_LABELS
from segls.data.readers import IMAGE_EXTS, MASK_EXTS, DataError

TRAIN_NAMES = ("train", "training")
VAL_NAMES = ("val", "validation", "valid")
PROPOSED_TRAIN, PROPOSED_VAL = "auto_train", "auto_val"
VAL_FRACTION = 0.2  # one fold of nnU-Net's five
MAX_LISTED = 10

Pairs = tuple[list[Path], list[Path]]


@dataclass(frozen=True)
class ReadSettings:
    """The ``data.*`` fields that say where a layout's files are and how its masks read.

    `segls.data.layouts` and `segls.data.datasets.LabelMapper` read only these from a
    DataConfig, so surveying a dataset needs no config.
    """

    format: str = "folder"
    root: str = ""
    num_classes: int = 2
    ignore_index: int = 255
    reduce_zero_label: bool = False
    cityscapes_labels: str = "labelTrainIds"


@dataclass
class Problem:
    """Something wrong with the data; `blocking` when training would stop on it."""

    kind: str
    message: str
    blocking: bool = True
    files: list[str] = field(default_factory=list)


@dataclass
class Inventory:
    """The pairs of the training and validation splits and what is wrong with them."""

    root: Path
    format: str
    train_split: str
    val_split: str
    pairs: dict[str, Pairs]
    other_splits: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    proposed_lists: dict[str, list[str]] = field(default_factory=dict)
    cityscapes_labels: str = "labelTrainIds"


def _listed(names: list[str]) -> str:
    """Up to MAX_LISTED names, with a count of the rest."""
    more = f" (+{len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else ""
    return ", ".join(names[:MAX_LISTED]) + more


def propose_split(stems: list[str], fraction: float = VAL_FRACTION) -> tuple[list[str], list[str]]:
    """(train, val) stems: the `fraction` whose SHA-256 digests sort first go to val.

    Depends on the stems alone, not on their order or on a random seed, so the proposal is
    the same on every machine; at least one image goes to each side when there are two.
    """
    if len(stems) < 2:
        return list(stems), list(stems)
    ranked = sorted(stems, key=lambda stem: hashlib.sha256(stem.encode("utf-8")).hexdigest())
    num_val = min(len(stems) - 1, max(1, round(fraction * len(stems))))
    val = set(ranked[:num_val])
    return [s for s in sorted(stems) if s not in val], [s for s in sorted(stems) if s in val]


def _pair_dirs(image_dir: Path, mask_dir: Path, split: str, problems: list[Problem]) -> Pairs:
    """Images and masks matched by stem; the unmatched ones become problems."""
    images = files_by_stem(image_dir, IMAGE_EXTS)
    masks = files_by_stem(mask_dir, MASK_EXTS) if mask_dir.is_dir() else {}
    no_mask = sorted(set(images) - set(masks))
    no_image = sorted(set(masks) - set(images))
    for kind, stems, files, what, folder, lacking, other in (
        ("missing_mask", no_mask, images, "image(s)", image_dir, "mask", mask_dir),
        ("extra_mask", no_image, masks, "mask(s)", mask_dir, "image", image_dir),
    ):
        if stems:
            message = f"{split}: {len(stems)} {what} in {folder} have no {lacking} in {other}"
            problems.append(
                Problem(kind, f"{message}: {_listed(stems)}", files=[str(files[s]) for s in stems])
            )
    stems = sorted(set(images) & set(masks))
    return [images[s] for s in stems], [masks[s] for s in stems]


def _pair_split(root: Path, split: str, problems: list[Problem]) -> Pairs:
    """One folder-format split, from its list file or its directories."""
    if (root / f"{split}.txt").is_file():
        try:
            return LAYOUTS["folder"](root, split, ReadSettings(root=str(root)))
        except DataError as error:
            problems.append(Problem("unpaired", f"{split}: {error}"))
            return [], []
    return _pair_dirs(root / "images" / split, root / "masks" / split, split, problems)


def _propose(
    root: Path, pairs: Pairs, folder: str | None, inventory: Inventory, reason: str
) -> None:
    """Split `pairs` into the proposed train/val lists, recorded in `inventory`."""
    by_stem = {image.stem: (image, mask) for image, mask in zip(*pairs, strict=True)}
    train, val = propose_split(sorted(by_stem))
    prefix = f"{folder}/" if folder else ""
    for name, stems in ((PROPOSED_TRAIN, train), (PROPOSED_VAL, val)):
        inventory.proposed_lists[f"{name}.txt"] = [prefix + stem for stem in stems]
        inventory.pairs[name] = ([by_stem[s][0] for s in stems], [by_stem[s][1] for s in stems])
    inventory.train_split, inventory.val_split = PROPOSED_TRAIN, PROPOSED_VAL
    same = " (too few images to split: validating on the training image)" if len(train) < 2 else ""
    inventory.problems.append(Problem(
        "no_val_split",
        f"{reason}: proposed a deterministic one, {len(val)} of {len(by_stem)} images (the "
        f"{VAL_FRACTION:.0%} whose file stems hash first), written as {root / PROPOSED_TRAIN}.txt "
        f"and {root / PROPOSED_VAL}.txt{same}",
        blocking=False,
    ))  # fmt: skip


def _survey_folder(root: Path) -> Inventory:
    """The folder format: images/<split>/ + masks/<split>/, list files, or flat images/ + masks/."""
    image_root = root / "images"
    if not image_root.is_dir():
        raise DataError(
            f"{root} has no images/ folder; the folder format needs images/<split>/ and "
            "masks/<split>/, or images/ and masks/ holding the files directly (data/README.md)"
        )
    split_dirs = sorted(p.name for p in image_root.iterdir() if p.is_dir() and p.name[0] != ".")
    listed = [n for n in TRAIN_NAMES + VAL_NAMES if (root / f"{n}.txt").is_file()]
    names = split_dirs + [n for n in listed if n not in split_dirs]
    train = next((n for n in TRAIN_NAMES if n in names), None)
    val = next((n for n in VAL_NAMES if n in names), None)
    inventory = Inventory(root, "folder", train or PROPOSED_TRAIN, val or PROPOSED_VAL, {})
    problems = inventory.problems
    if train is None:
        if split_dirs:
            raise DataError(
                f"{image_root} has the splits {', '.join(split_dirs)} but none is called "
                f"{' or '.join(TRAIN_NAMES)}; rename the training split's folders"
            )
        flat = _pair_dirs(image_root, root / "masks", "images", problems)
        _propose(root, flat, None, inventory, "no train/val splits (images/ holds the files)")
    else:
        inventory.pairs[train] = _pair_split(root, train, problems)
        if val is not None:
            inventory.pairs[val] = _pair_split(root, val, problems)
        if val is None or not inventory.pairs[val][0]:
            if val is not None:
                problems.append(Problem("empty_split", f"split {val!r} holds no image pairs"))
            folder = None if (root / f"{train}.txt").is_file() else train
            _propose(root, inventory.pairs.pop(train), folder, inventory, "no validation split")
    for name in names:
        if name not in (train, val):
            count = len(files_by_stem(image_root / name, IMAGE_EXTS)) if name in split_dirs else 0
            inventory.other_splits[name] = count
    return inventory


def _survey_layout(root: Path, fmt: str) -> Inventory:
    """VOC, Cityscapes or ADE20K: the train and val splits through their layouts."""
    labels = "labelTrainIds"
    if fmt == "cityscapes" and not any(root.glob("gtFine/train/*/*_gtFine_labelTrainIds.png")):
        labels = CITYSCAPES_LABELS[1]
    settings = ReadSettings(format=fmt, root=str(root), cityscapes_labels=labels)
    inventory = Inventory(root, fmt, "train", "val", {}, cityscapes_labels=labels)
    for split in ("train", "val"):
        try:
            inventory.pairs[split] = LAYOUTS[fmt](root, split, settings)
        except DataError as error:
            inventory.pairs[split] = ([], [])
            inventory.problems.append(Problem("unpaired", f"{split}: {error}"))
    return inventory


def survey(root: str | Path, fmt: str = "folder") -> Inventory:
    """The train and val pairs of the dataset at `root` in format `fmt`, with the problems found."""
    root = Path(root)
    if fmt not in LAYOUTS:
        raise DataError(f"format {fmt!r} is not one of {', '.join(LAYOUTS)}")
    if not root.is_dir():
        raise DataError(f"{root} is not a directory")
    inventory = _survey_folder(root) if fmt == "folder" else _survey_layout(root, fmt)
    if not inventory.pairs[inventory.train_split][0]:
        raise DataError(
            f"{root}: no image/mask pairs in the training split; "
            + "; ".join(p.message for p in inventory.problems)
        )
    return inventory
