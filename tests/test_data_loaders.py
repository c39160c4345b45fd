"""Tests of the resumable training batch stream."""

from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from segls.data import InfiniteLoader


class AugmentedRange(Dataset):
    """Items i -> (i, a draw from an augmentation stream that `reseed` restarts)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.reseed(None)

    def reseed(self, seed):
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        return index, float(self.rng.random())


def make_loader(size: int = 7, batch_size: int = 2) -> DataLoader:
    dataset = AugmentedRange(size)
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=3)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True)


def flatten(batch) -> list:
    return [batch[0].tolist(), batch[1].tolist()]


@pytest.mark.parametrize("start_iter", [0, 1, 2, 3, 5, 7])
def test_infinite_loader_resumes_at_any_iteration(start_iter):
    straight = InfiniteLoader(make_loader(), seed=3)
    expected = [flatten(next(straight)) for _ in range(start_iter + 6)][start_iter:]
    resumed = InfiniteLoader(make_loader(), seed=3, start_iter=start_iter)
    assert [flatten(next(resumed)) for _ in range(6)] == expected
    # Epochs differ in order (7 items, 3 batches of 2 per epoch), so the test is not vacuous.
    assert expected[0][0] != expected[3][0] or expected[1][0] != expected[4][0]


def test_infinite_loader_rejects_a_loader_without_full_batches():
    with pytest.raises(ValueError, match="data.batch_size"):
        InfiniteLoader(make_loader(size=1, batch_size=2), seed=0)
