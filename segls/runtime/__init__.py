"""Where a run executes: device, precision, threads, seeds, and the processes of a run.

`device` chooses the device and the mixed-precision dtype and applies threads and
determinism; `seeds` seeds and saves the random generators; `distributed` is torchrun's
process group, DDP and the collectives the rest of segls needs.
"""

from segls.runtime import distributed
from segls.runtime.device import (
    AMP_DTYPES,
    amp_dtype,
    autocast,
    configure,
    resolve_device,
    set_determinism,
)
from segls.runtime.distributed import progress
from segls.runtime.seeds import derived_seed, get_rng_state, seed_everything, set_rng_state

__all__ = [
    "AMP_DTYPES",
    "amp_dtype",
    "autocast",
    "configure",
    "derived_seed",
    "distributed",
    "get_rng_state",
    "progress",
    "resolve_device",
    "seed_everything",
    "set_determinism",
    "set_rng_state",
]
