"""Where each dataset format keeps its images and masks: one lister per format.

Every lister takes (root, split, data_cfg) and returns (image_paths, label_paths) of equal
length, sorted and paired, or raises a DataError naming what is missing and where it looked.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from segls.data.readers import IMAGE_EXTS, MASK_EXTS, DataError

if TYPE_CHECKING:
    from segls.config import DataConfig

Pairs = tuple[list[Path], list[Path]]
ADE20K_SPLITS = {"train": "training", "val": "validation"}
MAX_NAMED = 10


def _named(stems: list[str]) -> str:
    """Up to MAX_NAMED stems for an error message, with a count of the rest."""
    shown = ", ".join(stems[:MAX_NAMED])
    return shown + (f" (+{len(stems) - MAX_NAMED} more)" if len(stems) > MAX_NAMED else "")


def files_by_stem(directory: Path, exts: tuple[str, ...]) -> dict[str, Path]:
    """Files directly in ``directory`` with one of ``exts`` (any case), keyed by stem."""
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.suffix.lower() not in exts or path.name.startswith("."):
            continue
        if path.stem in found:
            raise DataError(
                f"{directory}: two files share the stem {path.stem!r} ({found[path.stem].name}, "
                f"{path.name}); keep one so images and masks pair unambiguously"
            )
        found[path.stem] = path
    return found


def pair_by_stem(
    images: dict[str, Path], masks: dict[str, Path], image_dir: Path, mask_dir: Path
) -> Pairs:
    """Image and mask paths matched by stem; unmatched files on either side are an error."""
    no_mask = sorted(set(images) - set(masks))
    no_image = sorted(set(masks) - set(images))
    if no_mask or no_image:
        problems = []
        if no_mask:
            problems.append(f"images without a mask in {mask_dir}: {_named(no_mask)}")
        if no_image:
            problems.append(f"masks without an image in {image_dir}: {_named(no_image)}")
        raise DataError("; ".join(problems) + "; add the missing files or remove the extras")
    stems = sorted(images)
    return [images[stem] for stem in stems], [masks[stem] for stem in stems]


def _require_dir(directory: Path, what: str) -> Path:
    """Return ``directory`` or raise a DataError saying which layout expected it."""
    if not directory.is_dir():
        raise DataError(f"{directory} does not exist; {what}")
    return directory


def _non_empty(pairs: Pairs, searched: Path) -> Pairs:
    """Return ``pairs`` unless the split turned out empty."""
    if not pairs[0]:
        raise DataError(f"no images found in {searched}; check data.root and the split name")
    return pairs


def read_stems(list_file: Path) -> list[str]:
    """Stems listed one per line (blank lines and '#' comments skipped)."""
    lines = list_file.read_text(encoding="utf-8").splitlines()
    stems = [line.strip() for line in lines]
    return [stem for stem in stems if stem and not stem.startswith("#")]


def _subfolder(line: str, list_file: Path) -> str:
    """The folder part of a list-file line ``<folder>/<stem>``, checked to stay inside root."""
    folder = line.rsplit("/", 1)[0]
    if not folder or folder.startswith("/") or ".." in folder.split("/"):
        raise DataError(
            f"{list_file}: line {line!r} must be a stem or <folder>/<stem> inside images/ "
            "and masks/"
        )
    return folder


def list_folder(root: Path, split: str, data_cfg: DataConfig) -> Pairs:
    """Folder format: images/<split>/ and masks/<split>/ matched by stem, or a list file.

    If ``root/<split>.txt`` exists it names the stems (one per line) and each is looked up
    first in ``images/<split>/`` then in ``images/`` (flat), likewise under ``masks/``; a
    line ``<folder>/<stem>`` names a file in ``images/<folder>/`` and ``masks/<folder>/``.
    Otherwise every image in ``images/<split>/`` is used. Images: png, jpg, jpeg, tif,
    tiff; masks: png (tif/tiff also accepted).
    """
    list_file = root / f"{split}.txt"
    if not list_file.is_file():
        image_dir = _require_dir(
            root / "images" / split,
            f"the folder format needs {root}/images/{split}/ and {root}/masks/{split}/, "
            f"or a list file {list_file}",
        )
        mask_dir = _require_dir(
            root / "masks" / split, f"put the masks of {image_dir} there, matched by file stem"
        )
        images = files_by_stem(image_dir, IMAGE_EXTS)
        pairs = pair_by_stem(images, files_by_stem(mask_dir, MASK_EXTS), image_dir, mask_dir)
        return _non_empty(pairs, image_dir)
    stems = read_stems(list_file)
    if not stems:
        raise DataError(f"{list_file} lists no stems; write one image stem per line")
    subfolders = sorted({_subfolder(stem, list_file) for stem in stems if "/" in stem})
    found = []
    for kind, exts in (("images", IMAGE_EXTS), ("masks", MASK_EXTS)):
        dirs = [d for d in (root / kind / split, root / kind) if d.is_dir()]
        if not dirs:
            raise DataError(f"{list_file} is used but {root / kind} does not exist")
        available: dict[str, Path] = {}
        for directory in reversed(dirs):
            available.update(files_by_stem(directory, exts))
        for folder in subfolders:
            if (root / kind / folder).is_dir():
                in_folder = files_by_stem(root / kind / folder, exts)
                available.update({f"{folder}/{stem}": path for stem, path in in_folder.items()})
        missing = [stem for stem in stems if stem not in available]
        if missing:
            searched = " or ".join(str(d) for d in dirs)
            raise DataError(f"{list_file}: no {kind} in {searched} for stems {_named(missing)}")
        found.append([available[stem] for stem in stems])
    return found[0], found[1]


def resolve_voc_root(root: Path) -> Path:
    """Accept VOCdevkit as well as VOCdevkit/VOC2012 as data.root."""
    if not (root / "JPEGImages").is_dir() and (root / "VOC2012" / "JPEGImages").is_dir():
        return root / "VOC2012"
    return root


def list_voc(root: Path, split: str, data_cfg: DataConfig) -> Pairs:
    """PASCAL VOC 2012: ImageSets/Segmentation/<split>.txt, JPEGImages/*.jpg, SegmentationClass/*.png."""
    root = resolve_voc_root(root)
    list_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not list_file.is_file():
        raise DataError(
            f"{list_file} does not exist; data.root must be VOCdevkit/VOC2012 and the split "
            "one of the lists in ImageSets/Segmentation (train, val, trainval)"
        )
    stems = read_stems(list_file)
    images = [root / "JPEGImages" / f"{stem}.jpg" for stem in stems]
    masks = [root / "SegmentationClass" / f"{stem}.png" for stem in stems]
    no_image = [stem for stem in stems if not (root / "JPEGImages" / f"{stem}.jpg").is_file()]
    no_mask = [stem for stem in stems if not (root / "SegmentationClass" / f"{stem}.png").is_file()]
    if no_image or no_mask:
        raise DataError(
            f"{list_file} lists stems without files: no JPEGImages/*.jpg for "
            f"[{_named(no_image)}], no SegmentationClass/*.png for [{_named(no_mask)}]"
        )
    return _non_empty((images, masks), list_file)


def list_cityscapes(root: Path, split: str, data_cfg: DataConfig) -> Pairs:
    """Cityscapes: leftImg8bit/<split>/<city>/*_leftImg8bit.png with gtFine/.../*_gtFine_<labels>.png."""
    labels = data_cfg.cityscapes_labels
    image_dir = _require_dir(
        root / "leftImg8bit" / split, "data.root must hold leftImg8bit/ and gtFine/"
    )
    images = sorted(image_dir.glob("*/*_leftImg8bit.png"))
    masks = []
    missing = []
    for image in images:
        prefix = image.name[: -len("_leftImg8bit.png")]
        mask = root / "gtFine" / split / image.parent.name / f"{prefix}_gtFine_{labels}.png"
        masks.append(mask)
        if not mask.is_file():
            missing.append(prefix)
    if missing:
        hint = " (create *_labelTrainIds.png or set data.cityscapes_labels=labelIds)"
        raise DataError(
            f"no gtFine/{split}/<city>/*_gtFine_{labels}.png under {root} for "
            f"{_named(missing)}" + (hint if labels == "labelTrainIds" else "")
        )
    return _non_empty((images, masks), image_dir)


def list_ade20k(root: Path, split: str, data_cfg: DataConfig) -> Pairs:
    """ADE20K (ADEChallengeData2016): images/<s>/*.jpg with annotations/<s>/*.png.

    The split may be given as train/val or as the folder names training/validation.
    """
    folder = ADE20K_SPLITS.get(split, split)
    image_dir = _require_dir(
        root / "images" / folder, "data.root must be ADEChallengeData2016 (images/, annotations/)"
    )
    mask_dir = _require_dir(root / "annotations" / folder, "ADE20K masks live in annotations/")
    images = files_by_stem(image_dir, (".jpg", ".jpeg"))
    pairs = pair_by_stem(images, files_by_stem(mask_dir, (".png",)), image_dir, mask_dir)
    return _non_empty(pairs, image_dir)


LAYOUTS: dict[str, Callable[[Path, str, DataConfig], Pairs]] = {
    "folder": list_folder,
    "voc": list_voc,
    "cityscapes": list_cityscapes,
    "ade20k": list_ade20k,
}
