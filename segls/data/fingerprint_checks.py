"""Problems seen only once every image is read: classes, consistency, near-duplicates."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from segls.data.image_stats import HASH_ROWS, hamming_distances
from segls.data.inventory import Problem

if TYPE_CHECKING:
    from segls.data.fingerprint import Fingerprint, ImageRecord

HASH_BITS = HASH_ROWS * HASH_ROWS
NEAR_DUPLICATE_BITS = 25  # about 10 % of the bits; unrelated images differ in about half
MAX_LISTED = 10
CHUNK_BYTES = 64 * 2**20  # bound on the XOR array of one block of the hash comparison


def _listed(items: list[str]) -> str:
    """Up to MAX_LISTED items, with a count of the rest."""
    more = f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


def infer_classes(pixels_by_value: Counter) -> tuple[list[str], int, list[Problem]]:
    """(names ``class_<i>``, ignore index, problems) when no class list comes with the data.

    Every stored value below the ignore label is a class id, so there are max + 1 classes.
    The ignore label is 255, as in PASCAL VOC, unless some value exceeds 255: then the masks
    hold 16-bit ids and it is 65535.
    """
    values = sorted(pixels_by_value)
    ignore_index = 255 if max(values, default=0) <= 255 else 65535
    ids = [value for value in values if 0 <= value != ignore_index]
    num_classes = max(ids, default=0) + 1
    problems = []
    if num_classes < 2:
        if ignore_index in values:
            message = (
                f"masks hold only the values {values}; {ignore_index} is the ignore label, so "
                "its pixels would be left out of training. If it marks the foreground, store "
                "it as 1 (e.g. mask // 255) or add a classes.txt naming the classes"
            )
        else:
            message = f"masks hold only the value {ids[0] if ids else values}: one class"
        problems.append(Problem("single_class", message))
        num_classes = 2
    return [f"class_{index}" for index in range(num_classes)], ignore_index, problems


def consistency_problems(fp: Fingerprint) -> list[Problem]:
    """Images whose channel count or dtype differs from the rest of the dataset."""
    records = [record for stats in fp.splits.values() for record in stats.records]
    problems = []
    channels = Counter(record.channels for record in records)
    if len(channels) > 1:
        common = channels.most_common(1)[0][0]
        odd = [record.image for record in records if record.channels != common]
        problems.append(Problem(
            "channels",
            f"images differ in channel count ({dict(channels)} images per count); training "
            f"needs one: {len(odd)} do not have {common}: {_listed(odd)}",
            files=odd,
        ))  # fmt: skip
    dtypes = Counter(record.dtype for record in records)
    if len(dtypes) > 1:
        problems.append(Problem(
            "dtypes",
            f"images differ in dtype ({dict(dtypes)}); each is scaled by its own dtype, but "
            "mixed bit depths usually mean mixed sources",
            blocking=False,
        ))  # fmt: skip
    return problems


def class_problems(fp: Fingerprint, files_by_value: dict[int, list[str]]) -> list[Problem]:
    """Mask values that are not classes, and classes missing from the train or val split."""
    problems = []
    if files_by_value:
        files = sorted({path for paths in files_by_value.values() for path in paths})
        problems.append(Problem(
            "not_a_class",
            f"mask values {sorted(files_by_value)[:20]} are neither class ids (0.."
            f"{fp.num_classes - 1}, from {fp.class_source}) nor the ignore label "
            f"{fp.ignore_index}; {len(files)} masks hold them: {_listed(files)}",
            files=files,
        ))  # fmt: skip
    train = fp.class_table(fp.train_split)["pixels"]
    val = fp.class_table(fp.val_split)["pixels"]
    names = [f"{index} {name!r}" for index, name in enumerate(fp.class_names)]
    never = [names[c] for c in range(fp.num_classes) if train[c] == 0 and val[c] == 0]
    val_only = [names[c] for c in range(fp.num_classes) if train[c] == 0 and val[c] > 0]
    not_in_val = [names[c] for c in range(fp.num_classes) if train[c] > 0 and val[c] == 0]
    for kind, found, what in (
        ("class_never_seen", never, "occur in no mask"),
        ("class_not_in_train", val_only, "occur in validation only: the model cannot learn them"),
        ("class_not_in_val", not_in_val, "never occur in validation: their IoU is not measured"),
    ):
        if found:
            problems.append(Problem(kind, f"classes {_listed(found)} {what}", blocking=False))
    return problems


def near_duplicates(
    train: list[ImageRecord], val: list[ImageRecord], max_bits: int = NEAR_DUPLICATE_BITS
) -> list[tuple[str, str, int]]:
    """(val image, train image, differing bits) for hash pairs at most `max_bits` apart."""
    if not train or not val:
        return []
    train_hashes = np.stack([record.digest for record in train])
    val_hashes = np.stack([record.digest for record in val])
    block = max(1, CHUNK_BYTES // max(1, train_hashes.nbytes))
    pairs = []
    for start in range(0, len(val), block):
        distances = hamming_distances(val_hashes[start : start + block], train_hashes)
        for row, col in zip(*np.nonzero(distances <= max_bits), strict=True):
            pairs.append((val[start + row].image, train[col].image, int(distances[row, col])))
    return pairs


def near_duplicate_problem(train: list[ImageRecord], val: list[ImageRecord]) -> Problem | None:
    """A problem naming the validation images that nearly repeat a training image, or None."""
    pairs = near_duplicates(train, val)
    if not pairs:
        return None
    shown = [f"{v} ~ {t} ({bits} of {HASH_BITS} bits differ)" for v, t, bits in pairs]
    return Problem(
        "near_duplicate",
        f"{len(pairs)} validation image(s) nearly repeat a training image, which makes "
        f"validation scores optimistic: {_listed(shown)}",
        blocking=False,
        files=sorted({name for v, t, _ in pairs for name in (v, t)}),
    )
