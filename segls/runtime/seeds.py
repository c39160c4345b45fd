"""Seeds and the global random generators' states, so that runs repeat and resume exactly."""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["derived_seed", "get_rng_state", "seed_everything", "set_rng_state"]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (all CUDA devices too)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(seed: int, *keys: int) -> int:
    """A seed in [0, 2**32) that is a fixed function of `seed` and `keys` (e.g. the epoch)."""
    sequence = np.random.SeedSequence([seed % 2**32, *(key % 2**32 for key in keys)])
    return int(sequence.generate_state(1)[0])


def get_rng_state() -> dict:
    """The global generators' states, in forms ``torch.load(weights_only=True)`` accepts."""
    version, mt_state, gauss_next = random.getstate()
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": [version, list(mt_state), gauss_next],
        "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached_gaussian)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the generators saved by `get_rng_state`."""
    version, mt_state, gauss_next = state["python"]
    random.setstate((version, tuple(mt_state), gauss_next))
    kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state(
        (kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian)
    )
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda", [])
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
