"""Which classes the training labels use: a model with classes no label uses is warned of.

``data.num_classes=5`` on data with 3 classes trains without an error: the extra classes
are only ever predicted by mistake. `ClassCensus` notes the classes of the first epoch's
labels as training steps through them and warns of those never seen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from segls.runtime import distributed

__all__ = ["ClassCensus"]


class ClassCensus:
    """Which classes the labels of the first epoch use; warns of classes none of them use.

    Counted on the device as the steps go (no host sync). Checked once, summed over the
    ranks, at the first evaluation after the first epoch (or a shorter run) ends: an
    iteration that reads from the device anyway, so plain steps keep their single sync.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        ignore_index: int,
        first_pass: int,
        device: torch.device,
        log: Callable[[str], None],
    ) -> None:
        """`first_pass`: the iterations of the first epoch (or of a shorter run)."""
        self.class_names = list(class_names)
        self.ignore_index = ignore_index
        self.end = first_pass
        self.log = log
        self.seen = torch.zeros(len(self.class_names) + 1, dtype=torch.bool, device=device)

    def add(self, labels: torch.Tensor, iteration: int, evaluating: bool) -> ClassCensus | None:
        """Count a batch's labels of the first pass; after it, when `evaluating`, warn (None)."""
        ignored = self.seen.numel() - 1  # the slot of ignored pixels
        if iteration <= self.end:
            slots = torch.where(labels == self.ignore_index, ignored, labels).flatten()
            self.seen.scatter_(0, slots, True)
        if iteration < self.end or not evaluating:
            return self
        used = distributed.all_reduce_sum(self.seen[:ignored].double().tolist())
        unused = [index for index, count in enumerate(used) if count == 0]
        if unused:
            shown = ", ".join(f"{index} ({self.class_names[index]})" for index in unused)
            self.log(
                f"warning: the model has data.num_classes={ignored} classes, but no training "
                f"label of the first {self.end} batches is class {shown}; check "
                "data.num_classes and data.ignore_index against the masks"
            )
        return None
