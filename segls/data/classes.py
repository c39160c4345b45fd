"""Class names and colour palettes of the supported datasets, and how a config overrides them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from segls.data.readers import DataError

if TYPE_CHECKING:
    from segls.config import DataConfig

CLASSES_FILE = "classes.txt"  # beside the data: one class name per line, line i = class i

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip

CITYSCAPES_CLASSES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
]  # fmt: skip

CITYSCAPES_PALETTE = [
    [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153],
    [153, 153, 153], [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152],
    [70, 130, 180], [220, 20, 60], [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100],
    [0, 80, 100], [0, 0, 230], [119, 11, 32],
]  # fmt: skip

# Cityscapes labelIds (0..33) that are evaluated, in train-id order 0..18.
CITYSCAPES_EVAL_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]

ADE20K_CLASSES = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror",
    "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp",
    "bathtub", "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers",
    "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway",
    "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book",
    "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer",
    "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman",
    "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt",
    "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan",
    "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
]  # fmt: skip


def bit_palette(num_classes: int) -> list[list[int]]:
    """Distinct colours by spreading the bits of each class index over R, G and B.

    This is the PASCAL VOC colour map (0 black, 1 dark red, 2 dark green, ...); every
    index below 2**24 gets its own colour, so it also serves as a generated palette.
    """
    palette = []
    for index in range(num_classes):
        rgb = [0, 0, 0]
        bits = index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((bits >> channel) & 1) << shift
            bits >>= 3
        palette.append(rgb)
    return palette


DEFAULT_CLASSES: dict[str, list[str]] = {
    "voc": VOC_CLASSES,
    "cityscapes": CITYSCAPES_CLASSES,
    "ade20k": ADE20K_CLASSES,
}

DEFAULT_PALETTES: dict[str, list[list[int]]] = {
    "voc": bit_palette(len(VOC_CLASSES)),
    "cityscapes": CITYSCAPES_PALETTE,
    "ade20k": bit_palette(len(ADE20K_CLASSES)),
}


def read_class_names(root: str | Path) -> list[str] | None:
    """Names from ``root/classes.txt`` (line i names class i), or None when there is no such file.

    Trailing blank lines are allowed; a blank line between names, a repeated name or fewer
    than two names is a DataError naming the file and the line.
    """
    path = Path(root) / CLASSES_FILE
    if not path.is_file():
        return None
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    for number, name in enumerate(lines, start=1):
        if not name:
            raise DataError(
                f"{path}: line {number} is blank; write one class name per line, line i naming "
                f"class i - 1 (so a blank line would leave class {number - 1} without a name)"
            )
        if name in lines[: number - 1]:
            first = lines.index(name) + 1
            raise DataError(f"{path}: line {number} repeats the name {name!r} of line {first}")
    if len(lines) < 2:
        raise DataError(f"{path} names {len(lines)} class(es); a segmentation needs at least 2")
    return lines


def resolve_classes(data_cfg: DataConfig) -> tuple[list[str], list[list[int]]]:
    """Class names and palette for ``data_cfg``: the config's own, else those beside the data.

    Names come from ``data.class_names``, else ``classes.txt`` in ``data.root``
    (`read_class_names`), else the dataset's defaults; the folder format without either falls
    back to ``class_<i>`` names. The palette is ``data.palette`` or the dataset's, else a
    generated one. Lengths must equal ``data.num_classes``.
    """
    num_classes = data_cfg.num_classes
    default_names = DEFAULT_CLASSES.get(data_cfg.format)
    file_names = None if data_cfg.class_names else read_class_names(data_cfg.root)
    if data_cfg.class_names:
        names, source = list(data_cfg.class_names), "data.class_names"
    elif file_names is not None:
        names, source = file_names, str(Path(data_cfg.root) / CLASSES_FILE)
    elif default_names is not None:
        names, source = list(default_names), f"the {data_cfg.format} class list"
    else:
        names, source = [f"class_{i}" for i in range(num_classes)], "generated names"
    if len(names) != num_classes:
        raise ValueError(
            f"{source} has {len(names)} classes but data.num_classes={num_classes}; "
            f"set data.num_classes={len(names)} or give data.class_names with {num_classes} names"
        )
    if data_cfg.palette:
        palette, source = [list(colour) for colour in data_cfg.palette], "data.palette"
    elif data_cfg.format in DEFAULT_PALETTES:
        palette, source = DEFAULT_PALETTES[data_cfg.format], f"the {data_cfg.format} palette"
    else:
        palette, source = bit_palette(num_classes), "generated palette"
    if len(palette) != num_classes:
        raise ValueError(
            f"{source} has {len(palette)} colours but data.num_classes={num_classes}; "
            f"give data.palette with {num_classes} [r, g, b] entries or leave it empty"
        )
    for colour in palette:
        if len(colour) != 3 or not all(0 <= int(value) <= 255 for value in colour):
            raise ValueError(f"palette colour {colour} is not [r, g, b] with values in 0..255")
    return names, [[int(value) for value in colour] for colour in palette]
