"""Where a run executes: device, precision, threads, seeds, and the processes of a run.

`device` chooses the device and the mixed-precision dtype and applies threads and
determinism; `seeds` seeds and saves the random generators; `distributed` is torchrun's
process group, DDP and the collectives the rest of segls needs.
"""

from segls.lazy import lazy_exports

# Loaded on first use, so that the config's import of `segls.runtime.names` stays light;
# `distributed` loads as a submodule.
_SOURCES = {
    "AMP_DTYPES": "device",
    "EVAL_MEMORY": "device",
    "amp_dtype": "device",
    "autocast": "device",
    "configure": "device",
    "derived_seed": "seeds",
    "is_out_of_memory": "device",
    "lower_on_oom": "device",
    "get_rng_state": "seeds",
    "progress": "distributed",
    "resolve_device": "device",
    "seed_everything": "seeds",
    "set_determinism": "device",
    "set_rng_state": "seeds",
}
__all__ = sorted(_SOURCES)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _SOURCES)
