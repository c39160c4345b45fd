"""Training and validation batches: per-epoch seeded order, exact resume, one shard per rank.

Training uses a DistributedSampler (one replica without torchrun): every rank sees its own
part of an epoch order that is a function of (seed, epoch). Validation with several ranks
uses `ShardSampler`, which deals each image to exactly one rank. Loader workers ignore
SIGINT and SIGTERM: the main process stops training (see `segls.faults`) and then them.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable

from torch.utils.data import DataLoader, DistributedSampler, Sampler

from segls import runtime
from segls.config import Config
from segls.data import build_dataloader, build_dataset

__all__ = ["InfiniteLoader", "ShardSampler", "augmentation_seed", "build_loaders"]

# Key standing for "before any epoch" in a rank's loader seed; no epoch count reaches it.
_LOADER_KEY = 2**32 - 1


def augmentation_seed(seed: int, rank: int, epoch: int | None = None) -> int:
    """The augmentation seed of `rank` in `epoch` (None: the loader's own seed).

    Rank 0 keeps the single-process seeds (`seed`, then ``derived_seed(seed, epoch)``), so a
    one-process run is unchanged; rank r > 0 derives its seeds from (seed, epoch, r), so the
    ranks augment their images differently.
    """
    if rank == 0:
        return seed if epoch is None else runtime.derived_seed(seed, epoch)
    return runtime.derived_seed(seed, _LOADER_KEY if epoch is None else epoch, rank)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, rank + 2 * world_size, ...`` of `length` items.

    Every index goes to exactly one rank; unlike DistributedSampler nothing is padded or
    repeated, so when `length` does not divide evenly some ranks get one item fewer (or none).
    """

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.indices = range(rank, length, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def build_loaders(cfg: Config, rank: int = 0, world_size: int = 1) -> tuple[DataLoader, DataLoader]:
    """Training loader (order seeded per epoch, see `InfiniteLoader`) and validation loader.

    With several ranks each gets its part of every training epoch (``data.batch_size`` is per
    rank) and its own shard of the validation set (`ShardSampler`).
    """
    seed, data = cfg.runtime.seed, cfg.data
    train_seed = augmentation_seed(seed, rank)
    train_set = build_dataset(data, data.train_split, train=True, seed=train_seed)
    sampler = DistributedSampler(
        train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=seed
    )
    train_loader = build_dataloader(
        data, data.train_split, train=True, seed=train_seed, sampler=sampler, dataset=train_set
    )
    val_set = build_dataset(data, data.val_split, train=False, seed=seed)
    val_sampler = ShardSampler(len(val_set), rank, world_size) if world_size > 1 else None
    val_loader = build_dataloader(
        data, data.val_split, train=False, seed=seed, sampler=val_sampler, dataset=val_set
    )
    for loader in (train_loader, val_loader):
        loader.worker_init_fn = functools.partial(_init_worker, loader.worker_init_fn)
    return train_loader, val_loader


def _init_worker(init_fn: Callable[[int], None] | None, worker_id: int) -> None:
    """Leave Ctrl-C and SIGTERM to the main process, which shuts the workers down; then `init_fn`.

    Otherwise a Ctrl-C in the terminal (sent to every process of the group) would end the
    workers under the main process while it writes its last checkpoint.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if init_fn is not None:
        init_fn(worker_id)


class InfiniteLoader:
    """Endless batches from a DataLoader, starting at any iteration, the same on resume.

    Epoch ``e`` is made a pure function of (seed, e, rank): the sampler's ``set_epoch(e)``
    fixes the order and the dataset's ``reseed`` restarts the augmentation stream (see
    `augmentation_seed`). Starting at iteration ``k`` mid-epoch loads and discards the
    epoch's first batches, so the augmentation stream is where it was. Exact with
    ``num_workers=0``; with workers the order is exact but the workers' augmentation streams
    are seeded anew.
    """

    def __init__(self, loader: DataLoader, seed: int, start_iter: int = 0, rank: int = 0) -> None:
        if len(loader) == 0:
            raise ValueError(
                f"the training set gives no full batch ({len(loader.dataset)} samples, "
                f"data.batch_size={loader.batch_size}); lower data.batch_size or add data"
            )
        self.loader = loader
        self.seed = seed
        self.rank = rank
        self.epoch, skip = divmod(start_iter, len(loader))
        self._iterator = None
        if skip:
            self._iterator = self._start_epoch()
            for _ in range(skip):
                next(self._iterator)

    def _start_epoch(self):
        """A fresh iterator over epoch ``self.epoch``."""
        sampler = self.loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        dataset = self.loader.dataset
        if hasattr(dataset, "reseed"):
            dataset.reseed(augmentation_seed(self.seed, self.rank, self.epoch))
        return iter(self.loader)

    def __iter__(self) -> InfiniteLoader:
        return self

    def __next__(self):
        if self._iterator is None:
            self._iterator = self._start_epoch()
        try:
            return next(self._iterator)
        except StopIteration:
            self.epoch += 1
            self._iterator = self._start_epoch()
            return next(self._iterator)
