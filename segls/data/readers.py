"""Reading images and label masks from disk into NumPy arrays, with errors that name the file."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MASK_EXTS = (".png", ".tif", ".tiff")
TIFF_EXTS = (".tif", ".tiff")
MASK_MODES = ("P", "L", "I", "I;16", "I;16B", "I;16L", "1")

# tifffile logs what it finds wrong in a damaged file (e.g. "invalid page offset") before it
# raises; without a handler Python prints that as a stray stderr line beside the DataError
# that names the file. A handler of our own keeps it off the console (it still propagates).
logging.getLogger("tifffile").addHandler(logging.NullHandler())


class DataError(ValueError):
    """A dataset file or layout that segls cannot use; the message names the file.

    Raised in a DataLoader worker, it reaches the main process as torch re-creates it there:
    ``DataError("Caught DataError in DataLoader worker process N.\nOriginal Traceback ...")``.
    The message is then unwrapped to the original one line, so that a bad file reads the
    same with ``data.num_workers`` 0 or more.
    """

    def __init__(self, message: object = "", *args: object) -> None:
        name = type(self).__name__
        if isinstance(message, str) and message.startswith(f"Caught {name} in DataLoader worker"):
            raised = list(re.finditer(rf"^(?:[\w.]+\.)?{name}: ", message, re.MULTILINE))
            if raised:
                message = message[raised[-1].end() :].strip()
        super().__init__(message, *args)


def _require_file(path: Path) -> None:
    """Raise FileNotFoundError naming ``path`` unless it is an existing file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist or is not a file")


def _read_tiff(path: Path) -> np.ndarray:
    """Decode a TIFF with tifffile, wrapping its errors in a DataError naming ``path``."""
    try:
        return tifffile.imread(path)
    except Exception as error:
        raise DataError(f"{path}: cannot read TIFF ({error}); is the file complete?") from error


def to_channels_last(array: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """Return an H×W×C view of a 2-D or 3-D image, moving a leading channel axis last.

    A 3-D array counts as channels-first when its first axis is shorter than both others
    (e.g. 2×512×512); otherwise the last axis is taken as the channel axis.
    """
    if array.ndim > 3:
        array = array.reshape([size for size in array.shape if size != 1] or [1])
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim != 3:
        raise DataError(
            f"{path}: image has shape {array.shape}; expected H×W, H×W×C or C×H×W "
            "(save stacks or time series as one image per file)"
        )
    if array.shape[0] < array.shape[1] and array.shape[0] < array.shape[2]:
        return np.moveaxis(array, 0, -1)
    return array


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as an H×W×C array in its stored dtype (uint8, uint16 or float), RGB order.

    TIFFs go through tifffile (any channel count, channels-first detected by size); other
    formats through OpenCV with IMREAD_UNCHANGED, so 16-bit PNGs keep their depth and
    EXIF orientation is ignored, matching how masks are read.
    """
    path = Path(path)
    _require_file(path)
    if path.suffix.lower() in TIFF_EXTS:
        return np.ascontiguousarray(to_channels_last(_read_tiff(path), path))
    buffer = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    del buffer  # the file's bytes: a huge image is not held twice
    if image is None:
        raise DataError(f"{path}: OpenCV cannot decode this image; is the file corrupt or empty?")
    if image.ndim == 2:
        return image[:, :, None]
    if image.shape[2] in (3, 4):  # in place, for the same reason
        swap = cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
        return cv2.cvtColor(image, swap, dst=image)
    return image


def read_mask(path: str | Path) -> np.ndarray:
    """Read a label mask as an H×W integer array; palette PNGs yield their indices, not colours.

    PNGs are decoded with PIL (mode P/L/I;16 keep their stored values); TIFFs with tifffile.
    Colour masks are rejected: segls expects one class id per pixel.
    """
    path = Path(path)
    _require_file(path)
    if path.suffix.lower() in TIFF_EXTS:
        mask = _read_tiff(path)
        if mask.ndim == 3 and 1 in (mask.shape[0], mask.shape[-1]):
            mask = mask.reshape(mask.shape[1:] if mask.shape[0] == 1 else mask.shape[:2])
    else:
        try:
            with Image.open(path) as pil_mask:
                pil_mask.load()
                mode = pil_mask.mode
                if mode not in MASK_MODES:
                    raise DataError(
                        f"{path}: mask has PIL mode {mode!r} ({len(pil_mask.getbands())} bands); "
                        "expected a single-channel class-id mask (palette, 8-bit or 16-bit "
                        "grayscale PNG); convert colour masks to class indices first"
                    )
                mask = np.asarray(pil_mask)
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise DataError(
                f"{path}: PIL cannot read this mask ({error}); is it corrupt?"
            ) from error
    if mask.ndim != 2:
        raise DataError(
            f"{path}: mask has shape {mask.shape}; expected H×W with one class id per pixel"
        )
    if mask.dtype == bool:
        return mask.astype(np.uint8)
    if not np.issubdtype(mask.dtype, np.integer):
        if not np.all(np.isfinite(mask)) or not np.all(mask == np.round(mask)):
            raise DataError(f"{path}: mask has non-integer {mask.dtype} values; store class ids")
        mask = mask.astype(np.int64)
    return mask


def mask_size(path: str | Path) -> tuple[int, int] | None:
    """A mask's (H, W) from its file's header, without decoding it; None if unreadable.

    An unreadable mask is `read_mask`'s to report, with its reason, when it is read.
    """
    try:
        if Path(path).suffix.lower() in TIFF_EXTS:
            with tifffile.TiffFile(path) as tiff:
                height, width = tiff.pages[0].shape[:2]
        else:
            with Image.open(path) as image:
                width, height = image.size
    except Exception:  # noqa: BLE001 - any failure here is reported by read_mask
        return None
    return int(height), int(width)


def dtype_max(dtype: np.dtype) -> float:
    """Value that maps to 1.0 when scaling pixels to [0, 1]: the integer max, 1 for floats."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0
