"""Labels of the unsigned dtypes torch barely supports (uint16/32/64) as signed labels.

``torch.from_numpy`` of a 16-bit mask gives uint16 labels, on which torch has copies and
``==``/``!=`` but no ``<``, ``>=`` or min/max ("aminmax_cpu" not implemented for 'UInt16').
The loss converts them once, at its entry, to the narrowest signed dtype that holds every
value: uint16 → int32 and uint32 → int64 (a copy of twice the labels' bytes; int64 for
uint16 would be four times), uint64 → int64 (a view, no copy). Every value then means what
it means as a Python int, so an ``ignore_index`` compares as for int64 labels (a uint16
65535 with ``ignore_index=255`` is an out-of-range label). uint64 values ≥ 2**63 have no int64: with ``check_labels`` they raise
the loss's ValueError naming them (one more reduction and host sync, for uint64 only);
unchecked they are out of range, so ignored like the other out-of-range labels. With a
negative ``ignore_index`` they become 2**63 − 1 (a copy), so that none wraps onto the index
where the check cannot read them first (under torch.compile or a torch.func transform).
"""

from __future__ import annotations

import torch

INT64_MAX = 2**63 - 1

_SIGNED_FOR = {torch.uint16: torch.int32, torch.uint32: torch.int64, torch.uint64: torch.int64}


def signed_labels(
    labels: torch.Tensor, num_classes: int, ignore_index: int, check_labels: bool
) -> torch.Tensor:
    """uint16/uint32/uint64 labels as int32/int64 with the same values; other labels as they are."""
    signed_dtype = _SIGNED_FOR.get(labels.dtype)
    if signed_dtype is None:
        return labels
    try:
        if labels.dtype == torch.uint64:
            signed = labels.view(torch.int64)  # values >= 2**63 wrap to negatives, see below
        else:
            signed = labels.to(signed_dtype)
    except (NotImplementedError, RuntimeError) as error:
        raise TypeError(
            f"labels of dtype {labels.dtype} on {labels.device} cannot be converted by torch "
            f"({error}); convert them to int64 first, e.g. torch.from_numpy(mask.astype("
            "numpy.int64)) or labels.cpu().to(torch.int64)"
        ) from error
    if labels.dtype != torch.uint64:
        return signed
    beyond_int64 = signed < 0
    if check_labels and _readable(labels) and bool(beyond_int64.any()):
        values = torch.unique(labels[beyond_int64]).tolist()
        shown = ", ".join(str(v) for v in values[:10]) + (", ..." if len(values) > 10 else "")
        raise ValueError(
            f"labels contain {shown} but C = {num_classes}: labels must be in "
            f"[0, {num_classes - 1}] or equal ignore_index={ignore_index}"
        )
    if ignore_index >= 0:  # a wrapped value is negative: out of range, never the index
        return signed
    return torch.where(beyond_int64, INT64_MAX, signed)


def _readable(labels: torch.Tensor) -> bool:
    """Whether the labels' values can be read now (not under torch.compile or a torch.func transform)."""
    if torch.compiler.is_compiling():
        return False
    return not torch._C._are_functorch_transforms_active()
