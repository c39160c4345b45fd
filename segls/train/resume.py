"""What a resumed run may change: the config it runs under against its checkpoint's.

A checkpoint holds the resolved config of the run that wrote it. `check_resume_config`
compares it with the config of the run resuming from it: any change outside
`RESUME_MAY_CHANGE` refuses to resume, naming the keys, since the resumed run would not
continue the run that wrote the checkpoint; allowed changes are returned to be logged.
"""

from __future__ import annotations

import os

from segls.config import Config, to_dict
from segls.config.convert import show
from segls.train.checkpoint import CheckpointError

__all__ = ["RESUME_MAY_CHANGE", "check_resume_config"]

# What a resumed run may set differently from the run that wrote its checkpoint: how long it
# runs; how often it logs, evaluates and saves; where the data lies and how it is loaded; the
# device, threads and kernels (the same maths done another way); the non-finite limit; and
# weight averaging (what is evaluated, not the steps). Any other difference refuses to resume.
RESUME_MAY_CHANGE = (
    "schedule.max_iters",
    "schedule.eval_interval",
    "schedule.checkpoint_interval",
    "schedule.log_interval",
    "data.root",
    "data.num_workers",
    "data.cache",
    "data.val_batch_size",
    "runtime.device",
    "runtime.num_threads",
    "runtime.vis_samples",
    "runtime.compile",
    "runtime.channels_last",
    "runtime.deterministic",
    "loss.backend",
    "loss.check_labels",
    "optimizer.max_nonfinite_steps",
    "optimizer.ema_decay",
)


def _fields(tree: dict) -> dict[str, object]:
    """A config dict's values by key path ("schedule.max_iters"); mappings stay whole."""
    return {
        f"{section}.{name}": value
        for section, fields in tree.items()
        if isinstance(fields, dict)
        for name, value in fields.items()
    }


def check_resume_config(state: dict, path: str | os.PathLike, cfg: Config) -> list[str]:
    """The changes of `cfg` from the config that wrote `state` (read from `path`), to log.

    A change of a key outside `RESUME_MAY_CHANGE` is a CheckpointError naming every such
    key: the resumed run would not continue the run that wrote the checkpoint. Keys that
    only one of the two configs knows (another segls version) are not compared.
    """
    stored = state.get("config")
    if not isinstance(stored, dict):
        return [f"{path} holds no config to compare with; resuming under this run's config"]
    before, now = _fields(stored), _fields(to_dict(cfg))
    changed = sorted(key for key in before.keys() & now.keys() if before[key] != now[key])
    described = {key: f"{key} {show(before[key])} -> {show(now[key])}" for key in changed}
    refused = [described[key] for key in changed if key not in RESUME_MAY_CHANGE]
    if refused:
        raise CheckpointError(
            f"cannot resume from {path}: it was written with other settings ({'; '.join(refused)}"
            "); resume with the config it was written with (config.yaml in its work dir), or "
            "start a fresh run (the README lists the keys that may change on resume)"
        )
    return [f"changed on resume: {described[key]}" for key in changed]
