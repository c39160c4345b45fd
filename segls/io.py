"""Every file segls writes goes through here: atomic replaces, JSON, PNG, torch files, logs.

A file is written to a temporary file beside its destination, named
``.<name>.<pid>.<random>.tmp`` (so `remove_stale_temp_files` can tell a dead writer's
leftovers from a live one's), flushed to disk, and moved over the destination in one
``os.replace``; then the directory entry is flushed too. A crash or ``kill -9`` at any moment
leaves either the old file or the new one, never half of one. Append-only logs
(`append_text`) are the one exception: a line is added to the end, or not.

Torch files (`write_torch`) carry a CRC-32 of the bytes ``torch.save`` wrote, computed as
they are written and kept in the zip archive's comment, so the file stays an ordinary
torch file; `read_torch` verifies it before loading with ``weights_only=True``, and turns
torch's errors into `UnreadableFileError` messages that say what is wrong with the file.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import re
import shutil
import struct
import tempfile
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = [
    "UnreadableFileError",
    "append_text",
    "encode_png",
    "json_safe",
    "read_torch",
    "remove_files",
    "remove_stale_temp_files",
    "scratch_directory",
    "staged_directory",
    "write_atomic",
    "write_bytes",
    "write_json",
    "write_png",
    "write_png_rows",
    "write_text",
    "write_through_path",
    "write_torch",
]

_TEMP_NAME = re.compile(r"\..+\.(?P<pid>[0-9]+)\.[0-9a-f]{8}\.tmp(\.[^.]+)?")


def write_through_path(
    path: str | os.PathLike, write: Callable[[Path], object], suffix: str = ""
) -> None:
    """Create or replace `path` with the file that `write` creates at the path it is given.

    For writers that want a file name (ONNX); `suffix` ends the temporary name (".onnx").
    The parent directory is created if needed. If `write` raises (or the process is killed),
    `path` is left as it was and the temporary file is removed (or, after a kill, left for
    `remove_stale_temp_files`). New files get the usual umask permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp_path = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{suffix}"
    try:
        write(temp_path)
        descriptor = os.open(temp_path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Create or replace `path` with what `write` writes into the binary file it is given."""

    def fill(temp_path: Path) -> None:
        with _open_new(temp_path) as handle:
            write(handle)

    write_through_path(path, fill)


def _open_new(path: Path) -> BinaryIO:
    """A new file at `path` opened for binary writing (an error if it exists)."""
    # os.open with 0o666 lets the umask set the permissions, as for any other new file.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    return os.fdopen(descriptor, "wb")


def write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """Create or replace `path` with `data`; `mode` (e.g. 0o644) overrides the umask."""

    def fill(handle: BinaryIO) -> None:
        handle.write(data)
        if mode is not None:
            os.fchmod(handle.fileno(), mode)

    write_atomic(path, fill)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Create or replace `path` with `text` as UTF-8."""
    write_bytes(path, text.encode("utf-8"))


def json_safe(value: object) -> object:
    """`value` with NaN/inf floats replaced by None, recursively through lists and dicts."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def _plain(value: object) -> object:
    """Tensors and NumPy values (anything with ``tolist``) as numbers or lists, for `json.dumps`."""
    if callable(getattr(value, "tolist", None)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_json(path: str | os.PathLike, data: object) -> None:
    """`data` as indented JSON (NaN and inf written as null; tensors and arrays as lists)."""
    text = json.dumps(json_safe(data), indent=2, default=_plain, allow_nan=False)
    write_text(path, text + "\n")


def append_text(path: str | os.PathLike, text: str) -> None:
    """Add `text` (UTF-8) to the end of the log file `path`, creating it if needed."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def _palette_png(array: np.ndarray, palette: list[list[int]], compression: int | None) -> bytes:
    """PNG bytes of an H×W uint8 array as a palette image (PNG colour type 3)."""
    import numpy as np
    from PIL import Image

    if array.ndim != 2 or array.dtype != np.uint8 or not 0 < len(palette) <= 256:
        raise ValueError(
            f"a palette PNG holds an H×W uint8 array and 1..256 colours, got a "
            f"{array.shape} {array.dtype} array and {len(palette)} colours"
        )
    image = Image.fromarray(np.ascontiguousarray(array))
    image.putpalette([int(value) for colour in palette for value in colour])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6 if compression is None else compression)
    return buffer.getvalue()


def encode_png(
    array: np.ndarray | torch.Tensor,
    compression: int | None = None,
    palette: list[list[int]] | None = None,
) -> bytes:
    """PNG bytes of an H×W (uint8 or uint16) or H×W×3 RGB uint8 array or CPU tensor.

    `compression` is zlib's level 0-9 (None: the encoder's default). With `palette` (one
    ``[r, g, b]`` per value) an H×W uint8 array becomes a palette PNG: the pixels keep their
    values and viewers show each in its colour (PASCAL VOC's masks are written this way).
    """
    import cv2  # imported here: the config writes its YAML through this module, and fast
    import numpy as np

    array = np.asarray(array)
    if palette is not None:
        return _palette_png(array, palette, compression)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    params = [] if compression is None else [cv2.IMWRITE_PNG_COMPRESSION, compression]
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(array), params)
    if not ok:
        raise OSError(f"OpenCV could not encode a {array.shape} {array.dtype} array as PNG")
    return encoded.tobytes()


def write_png(
    path: str | os.PathLike,
    image: np.ndarray | torch.Tensor,
    palette: list[list[int]] | None = None,
) -> None:
    """Write an H×W or H×W×3 RGB uint8 (or H×W uint16) array or CPU tensor as a PNG.

    With `palette`, an H×W uint8 image is written as a palette PNG (`encode_png`).
    """
    write_bytes(path, encode_png(image, palette=palette))


def _png_chunk(handle: BinaryIO, tag: bytes, data: bytes) -> None:
    """One PNG chunk: length, tag, data, CRC-32 of tag and data."""
    handle.write(struct.pack(">I", len(data)) + tag)
    handle.write(data)
    handle.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(tag))))


def write_png_rows(
    path: str | os.PathLike,
    size: tuple[int, int],
    bands: Iterable[np.ndarray],
    compression: int = 6,
) -> None:
    """Write an H×W×3 RGB uint8 image given as bands of rows (each h×W×3), one band at a time.

    For images too large to hold twice (a huge image's overlay): the PNG is compressed and
    written as the bands come, each row with PNG's "Sub" filter. Its pixels equal those
    `write_png` writes; the bytes do not.
    """
    import numpy as np

    height, width = size

    def write(handle: BinaryIO) -> None:
        handle.write(b"\x89PNG\r\n\x1a\n")
        _png_chunk(handle, b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        compressor, done = zlib.compressobj(compression), 0
        for band in bands:
            if band.dtype != np.uint8 or band.shape[1:] != (width, 3):
                raise ValueError(f"expected h×{width}×3 uint8 rows, got {band.shape} {band.dtype}")
            flat = band.reshape(len(band), width * 3)
            filtered = np.empty((len(band), width * 3 + 1), np.uint8)
            filtered[:, 0] = 1  # "Sub": each byte minus the byte one pixel to its left
            filtered[:, 1:4] = flat[:, :3]
            np.subtract(flat[:, 3:], flat[:, :-3], out=filtered[:, 4:])  # modulo 256
            _png_chunk(handle, b"IDAT", compressor.compress(filtered.tobytes()))
            done += len(band)
        if done != height:
            raise ValueError(f"expected {height} rows, got {done}")
        _png_chunk(handle, b"IDAT", compressor.flush())
        _png_chunk(handle, b"IEND", b"")

    write_atomic(path, write)


_END_RECORD = b"PK\x05\x06"  # a zip archive's end-of-central-directory record: its last 22 bytes
_END_RECORD_SIZE = 22
_CHECKSUM_TAG = b"segls-crc32:"
_CHECKSUM_SIZE = len(_CHECKSUM_TAG) + 8


class UnreadableFileError(ValueError):
    """A torch file that is damaged, is no torch file, or holds objects that are not loaded."""


class _ChecksummedWriter:
    """A binary file that keeps the CRC-32 and the last bytes of what is written through it.

    An OSError of the file (a full disk) is kept too: torch reports it as "unexpected pos".
    """

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.crc = 0
        self.tail = b""
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            written = self.handle.write(data)
        except OSError as error:
            self.error = error
            raise
        self.crc = zlib.crc32(data, self.crc)
        self.tail = (self.tail + bytes(data[-_END_RECORD_SIZE:]))[-_END_RECORD_SIZE:]
        return written

    def flush(self) -> None:
        self.handle.flush()


def write_torch(path: str | os.PathLike, obj: object) -> None:
    """Write `obj` with ``torch.save`` (a checkpoint, a state dict), with its CRC-32.

    The checksum goes into the zip comment (see the module docstring). A full disk or
    another failed write raises the OSError that caused it, and `path` stays as it was.
    """

    import torch  # imported here: the config writes its YAML through this module, and fast

    def fill(handle: BinaryIO) -> None:
        writer = _ChecksummedWriter(handle)
        try:
            torch.save(obj, writer)
        except Exception:
            if writer.error is not None:
                raise writer.error from None
            raise
        if not (writer.tail.startswith(_END_RECORD) and writer.tail.endswith(b"\0\0")):
            raise RuntimeError("torch.save did not end its file with a plain zip end record")
        comment = _CHECKSUM_TAG + b"%08x" % writer.crc
        handle.seek(-2, os.SEEK_END)  # the end record's comment length, 0 as torch wrote it
        handle.write(len(comment).to_bytes(2, "little") + comment)

    write_atomic(path, fill)


def _checksum_problem(path: Path) -> str | None:
    """Why the CRC-32 written with `path` does not match its bytes; None if it does or is absent.

    Files without one (written by torch.save itself) pass unchecked.
    """
    size = path.stat().st_size
    trailer = _END_RECORD_SIZE + _CHECKSUM_SIZE
    with open(path, "rb") as handle:
        handle.seek(max(size - trailer, 0))
        tail = handle.read()
        if _CHECKSUM_TAG not in tail:
            return None
        stated = tail[-8:]
        laid_out = (
            len(tail) == trailer
            and tail.startswith(_END_RECORD)
            and tail[20:22] == _CHECKSUM_SIZE.to_bytes(2, "little")
            and tail[22:-8] == _CHECKSUM_TAG
        )
        if not laid_out:
            return "its checksum record is damaged"
        handle.seek(0)
        crc, left = 0, size - _CHECKSUM_SIZE - 2
        while left > 0:
            chunk = handle.read(min(left, 1 << 24))
            crc, left = zlib.crc32(chunk, crc), left - len(chunk)
    crc = zlib.crc32(b"\0\0", crc)
    if b"%08x" % crc != stated:
        return (
            f"its contents do not match the CRC-32 written with it ({stated.decode(errors='replace')}"
            f", now {crc:08x}): bytes changed on disk or in a copy"
        )
    return None


def _load_problem(error: Exception) -> str:
    """What a failed ``torch.load(weights_only=True)`` says about the file, in a few words.

    Never torch's advice to load with ``weights_only=False``: that would run the file's code.
    """
    text = str(error)
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if isinstance(error, pickle.UnpicklingError) and unsafe:
        return (
            f"it holds a pickled Python object ({unsafe[1]}) besides tensors and plain values; "
            "segls never unpickles such objects, as that can run code from the file. Use a "
            "file holding only tensors (a state dict) from a source you trust"
        )
    reason = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    first = reason[1] if reason else re.split(r"(?<=\.)\s", text.strip(), maxsplit=1)[0]
    first = first.strip().rstrip(".")
    detail = type(error).__name__ + (f": {first}" if first and "weights_only" not in first else "")
    return f"it is truncated, corrupt or not a torch file ({detail})"


def read_torch(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> object:
    """Load a torch file with ``weights_only=True`` after checking the CRC-32 written with it.

    UnreadableFileError (naming `path`) when the checksum does not match, the file does not
    load, or it holds objects other than tensors and plain values.
    """
    import torch

    path = Path(path)
    try:
        problem = _checksum_problem(path)
    except OSError as error:
        raise UnreadableFileError(f"{path}: cannot be read ({error.strerror or error})") from None
    if problem is None:
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as error:
            problem = _load_problem(error)
    raise UnreadableFileError(f"{path}: {problem}")


def remove_files(paths: Iterable[str | os.PathLike]) -> None:
    """Delete `paths` (those that exist)."""
    for path in paths:
        Path(path).unlink(missing_ok=True)


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files left in `directory` by writers that died mid-write.

    Their names carry the writer's pid; files of a process that still runs are kept.
    """
    removed = []
    for path in sorted(Path(directory).glob(".*.tmp*")):
        match = _TEMP_NAME.fullmatch(path.name)
        if match is None or _process_exists(int(match["pid"])):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _process_exists(pid: int) -> bool:
    """Whether a process with `pid` runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def scratch_directory(
    path: str | os.PathLike | None = None, prefix: str = "segls_"
) -> Iterator[Path]:
    """`path` (created if needed, kept afterwards), or a new temporary directory removed after."""
    if path is not None:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
        return
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def staged_directory(root: str | os.PathLike, mode: int = 0o755) -> Iterator[Path]:
    """A hidden directory beside `root` to fill; it replaces `root` when the block succeeds.

    If the block fails, the staging directory is removed and `root` is left as it was; an
    existing `root` is swapped out only once the new one is complete.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        os.chmod(staging, mode)
        yield staging
        _swap_into_place(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_into_place(staging: Path, root: Path) -> None:
    """Rename `staging` to `root`, putting an existing `root` back if the rename fails."""
    if not root.exists():
        os.replace(staging, root)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
    retired.rmdir()
    os.replace(root, retired)
    try:
        os.replace(staging, root)
    except BaseException:
        os.replace(retired, root)
        raise
    shutil.rmtree(retired, ignore_errors=True)
