"""Data loaders: `build_dataloader` makes one, `build_loaders` a run's training and validation pair.

A run's training loader uses a DistributedSampler (one replica without torchrun): every rank
sees its own part of an epoch order that is a function of (seed, epoch), and `InfiniteLoader`
re-enters that stream at any iteration. Validation with several ranks uses `ShardSampler`,
which deals each image to exactly one rank. Loader workers ignore SIGINT and SIGTERM: the
main process stops training (see `segls.train.faults`) and then them (`shut_down`).

Because the workers ignore SIGTERM, multiprocessing's own exit handler (SIGTERM, then wait)
would wait forever on workers nobody told to stop: persistent workers stay up as long as
their loader does, and torch's own clean-up is a no-op once the interpreter is exiting.
So every loader made here is shut down explicitly, by the run that owns it when it ends
(`shut_down`, `InfiniteLoader.close`) and, for any still up, by an exit handler that runs
before multiprocessing's (`_shut_down_all`).
"""

from __future__ import annotations

import atexit
import itertools
import random
import signal
import weakref
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler

from segls import ConfigError
from segls.data.datasets import SegDataset, build_dataset
from segls.data.readers import DataError, mask_size
from segls.runtime.seeds import derived_seed

if TYPE_CHECKING:
    from segls.config import Config, DataConfig

__all__ = [
    "InfiniteLoader",
    "ShardSampler",
    "augmentation_seed",
    "batch_image_names",
    "batch_indices",
    "build_dataloader",
    "build_loaders",
    "build_val_loader",
    "check_crop_size",
    "check_first_batch",
    "init_worker",
    "shut_down",
]

# Key standing for "before any epoch" in a rank's loader seed; no epoch count reaches it.
_LOADER_KEY = 2**32 - 1


def augmentation_seed(seed: int, rank: int, epoch: int | None = None) -> int:
    """The augmentation seed of `rank` in `epoch` (None: the loader's own seed).

    Rank 0 keeps the single-process seeds (`seed`, then ``derived_seed(seed, epoch)``), so a
    one-process run is unchanged; rank r > 0 derives its seeds from (seed, epoch, r), so the
    ranks augment their images differently.
    """
    if rank == 0:
        return seed if epoch is None else derived_seed(seed, epoch)
    return derived_seed(seed, _LOADER_KEY if epoch is None else epoch, rank)


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


_LOADERS: weakref.WeakSet[DataLoader] = weakref.WeakSet()  # made here, shut down at exit
_WORKER_JOIN_S = 5.0


def shut_down(loader: DataLoader | None, iterator: object = None) -> None:
    """Stop `loader`'s worker processes (and `iterator`'s, if another) and wait for them.

    Workers that do not stop when asked (they ignore SIGTERM) are killed, so none outlives
    this call. Safe to call more than once, and for loaders without workers.
    """
    iterators = [iterator, getattr(loader, "_iterator", None)]
    if loader is not None:
        loader._iterator = None
    for each in iterators:
        if each is None or not hasattr(each, "_shutdown_workers"):
            continue
        each._shutdown_workers()
        for worker in getattr(each, "_workers", []):
            if worker.is_alive():
                worker.kill()
                worker.join(_WORKER_JOIN_S)


def _shut_down_all() -> None:
    """Stop the workers of every loader still up; runs before multiprocessing's exit handler.

    Registered again with each loader (`_watch`), so after torch's own exit flag and after
    multiprocessing's handler (which `multiprocessing.util.get_logger` registers anew): exit
    handlers run last registered first, so this one runs while torch can still stop workers.
    """
    for loader in list(_LOADERS):
        shut_down(loader)


def _watch(loader: DataLoader) -> None:
    """Have `_shut_down_all` stop `loader`'s workers at exit, if nothing did before."""
    _LOADERS.add(loader)
    atexit.unregister(_shut_down_all)
    atexit.register(_shut_down_all)


def init_worker(worker_id: int) -> None:
    """Set up a loader worker: leave Ctrl-C and SIGTERM to the main process, then seed.

    Ignoring the signals keeps a Ctrl-C in the terminal (sent to every process of the group)
    from ending the workers under the main process while it writes its last checkpoint; the
    main process shuts them down. numpy, random and the dataset's augmentations are seeded
    from the worker's torch seed: torch gives each worker ``base_seed + worker_id`` with
    ``base_seed`` drawn from the loader's generator, so a seeded generator makes every
    worker stream reproducible.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    info = torch.utils.data.get_worker_info()
    dataset = info.dataset if info is not None else None
    while dataset is not None and not hasattr(dataset, "reseed"):
        dataset = getattr(dataset, "dataset", None)
    if dataset is not None:
        dataset.reseed(seed)


def build_dataloader(
    data_cfg: DataConfig,
    split: str,
    train: bool,
    seed: int = 0,
    sampler: Sampler | None = None,
    dataset: SegDataset | None = None,
) -> DataLoader:
    """DataLoader over `dataset`, by default ``build_dataset(data_cfg, split, train, seed)``.

    Training: ``batch_size``, shuffled (unless a sampler is given), last partial batch
    dropped, workers seeded from ``seed``. Validation: ``val_batch_size``, in order. Pass
    `dataset` when it is built already (e.g. to make the `sampler` from it).
    """
    if dataset is None:
        dataset = build_dataset(data_cfg, split, train, seed=seed)
    batch_size = data_cfg.batch_size if train else data_cfg.val_batch_size
    num_items = len(dataset) if sampler is None or not hasattr(sampler, "__len__") else len(sampler)
    if train and num_items < batch_size:
        raise DataError(
            f"split {split!r} of {data_cfg.root} gives {num_items} samples per epoch, fewer than "
            f"data.batch_size={batch_size}, so every batch would be dropped; lower "
            "data.batch_size, or raise data.repeat to draw several crops of each image per epoch"
        )
    generator = torch.Generator()
    generator.manual_seed(seed)
    num_workers = int(data_cfg.num_workers)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        drop_last=train,
        num_workers=num_workers,
        worker_init_fn=init_worker,
        generator=generator,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
    if num_workers > 0:
        _watch(loader)
    return loader


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
    return train_loader, build_val_loader(cfg, rank, world_size)


def build_val_loader(cfg: Config, rank: int = 0, world_size: int = 1) -> DataLoader:
    """The validation loader, in order; with several ranks, this rank's `ShardSampler` shard."""
    seed, data = cfg.runtime.seed, cfg.data
    val_set = build_dataset(data, data.val_split, train=False, seed=seed)
    val_sampler = ShardSampler(len(val_set), rank, world_size) if world_size > 1 else None
    return build_dataloader(
        data, data.val_split, train=False, seed=seed, sampler=val_sampler, dataset=val_set
    )


def batch_indices(loader: DataLoader, number: int) -> list[int] | None:
    """The dataset indices of batch `number` (from 0) of the loader's current epoch.

    Known when the sampler's order is fixed for the epoch (DistributedSampler after
    ``set_epoch``, ShardSampler, in order); None for a RandomSampler, which draws its order.
    """
    if loader.batch_sampler is None or isinstance(loader.sampler, RandomSampler):
        return None
    return next(itertools.islice(iter(loader.batch_sampler), number, None), None)


def batch_image_names(loader: DataLoader, number: int) -> list[str] | None:
    """The image files of batch `number` of the current epoch (see `batch_indices`), or None."""
    indices = batch_indices(loader, number)
    if indices is None:
        return None
    paths = getattr(loader.dataset, "image_paths", None)
    return [str(paths[index % len(paths)]) if paths else f"item {index}" for index in indices]


# A crop side above this many times the longest side of every training image (after the
# largest random scale) leaves at least three quarters of every crop padding.
CROP_OVER_IMAGE_LIMIT = 4


def check_crop_size(dataset: SegDataset, data_cfg: DataConfig) -> None:
    """ConfigError when data.crop_size is far above every training image (see the limit).

    A crop somewhat above the images is legitimate (they are padded with ignored pixels);
    the sizes come from the masks' headers, so no image is decoded.
    """
    sides = [max(size) for size in map(mask_size, dataset.label_paths) if size is not None]
    if not sides:
        return
    reach = max(sides) * max(data_cfg.scale_range)
    if max(data_cfg.crop_size) <= CROP_OVER_IMAGE_LIMIT * reach:
        return
    raise ConfigError(
        f"data.crop_size = {list(data_cfg.crop_size)} is more than {CROP_OVER_IMAGE_LIMIT} "
        f"times the longest side of the largest training image ({max(sides)} pixels, "
        f"{reach:g} at the high end of data.scale_range), so at least three quarters of every "
        f"crop would be padding; use a crop of at most about {max(sides)} a side"
    )


def check_first_batch(loader: DataLoader) -> None:
    """Load and collate the first batch of epoch 0 here, so bad data fails before training.

    The training stream is unchanged: `InfiniteLoader` reseeds the augmentations at the
    start of every epoch.
    """
    sampler = loader.sampler
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(0)
    indices = batch_indices(loader, 0)
    if indices:
        loader.collate_fn([loader.dataset[index] for index in indices])


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
        self.position = skip  # batches taken from the current epoch
        self._iterator = None
        if skip:
            try:
                self._iterator = self._start_epoch()
                for _ in range(skip):
                    next(self._iterator)
            except BaseException:
                self.close()
                raise

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
            batch = next(self._iterator)
        except StopIteration:
            self.epoch += 1
            self.position = 0
            self._iterator = self._start_epoch()
            batch = next(self._iterator)
        self.position += 1
        return batch

    def close(self) -> None:
        """Stop the loader's workers (`shut_down`); a later batch starts them anew."""
        iterator, self._iterator = self._iterator, None
        shut_down(self.loader, iterator)

    def last_batch_names(self) -> list[str] | None:
        """The image files of the batch returned last (see `batch_image_names`)."""
        return batch_image_names(self.loader, self.position - 1)
