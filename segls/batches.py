"""Training batches: an epoch order seeded from (seed, epoch), resumable at any iteration."""

from __future__ import annotations

from torch.utils.data import DataLoader, DistributedSampler

from segls import runtime
from segls.config import Config
from segls.data import build_dataloader, build_dataset

__all__ = ["InfiniteLoader", "build_loaders"]


def build_loaders(cfg: Config) -> tuple[DataLoader, DataLoader]:
    """Training loader (order seeded per epoch, see `InfiniteLoader`) and validation loader."""
    seed = cfg.runtime.seed
    train_set = build_dataset(cfg.data, cfg.data.train_split, train=True, seed=seed)
    sampler = DistributedSampler(train_set, num_replicas=1, rank=0, shuffle=True, seed=seed)
    train_loader = build_dataloader(
        cfg.data, cfg.data.train_split, train=True, seed=seed, sampler=sampler
    )
    val_loader = build_dataloader(cfg.data, cfg.data.val_split, train=False, seed=seed)
    return train_loader, val_loader


class InfiniteLoader:
    """Endless batches from a DataLoader, starting at any iteration, the same on resume.

    Epoch ``e`` is made a pure function of (seed, e): the sampler's ``set_epoch(e)`` fixes the
    order and the dataset's ``reseed`` restarts the augmentation stream. Starting at
    iteration ``k`` mid-epoch loads and discards the epoch's first batches, so the
    augmentation stream is where it was. Exact with ``num_workers=0``; with workers the order
    is exact but the workers' augmentation streams are seeded anew.
    """

    def __init__(self, loader: DataLoader, seed: int, start_iter: int = 0) -> None:
        if len(loader) == 0:
            raise ValueError(
                f"the training set gives no full batch ({len(loader.dataset)} samples, "
                f"data.batch_size={loader.batch_size}); lower data.batch_size or add data"
            )
        self.loader = loader
        self.seed = seed
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
            dataset.reseed(runtime.derived_seed(self.seed, self.epoch))
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
