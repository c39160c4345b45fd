"""What a resumed run may change: the config it runs under against its checkpoint's.

A checkpoint holds the resolved config of the run that wrote it. `check_resume_config`
compares it with the config of the run resuming from it: any change outside
`RESUME_MAY_CHANGE` refuses to resume, naming the keys, since the resumed run would not
continue the run that wrote the checkpoint; allowed changes are returned to be logged.

The number of processes is compared too (a checkpoint records ``world_size``): the batch
per step is ``data.batch_size`` times the processes, so a run may resume on another number
of processes only with the same total batch (e.g. 8 x 1 -> 4 x 2), and that is logged with
what it changes; another total is refused, naming both.
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


def _world_size_from_env() -> int:
    """The number of processes torchrun starts (``WORLD_SIZE``), 1 without torchrun."""
    world = os.environ.get("WORLD_SIZE", "1")
    return int(world) if world.isdigit() and int(world) > 0 else 1


def _processes(count: int) -> str:
    return f"{count} process" + ("" if count == 1 else "es")


def _check_total_batch(
    state: dict, path: str | os.PathLike, before: dict, now: dict, world_size: int
) -> list[str]:
    """The line to log for a resume on another number of processes with the same total batch.

    Another total batch is a CheckpointError naming both; a checkpoint that does not record
    its number of processes (an older segls) is taken as written by this many.
    """
    written_by = state.get("world_size")
    if not isinstance(written_by, int) or written_by == world_size:
        return []
    batch_before, batch_now = before.get("data.batch_size"), now.get("data.batch_size")
    if not isinstance(batch_before, int) or not isinstance(batch_now, int):
        return []
    total_before, total_now = batch_before * written_by, batch_now * world_size
    if total_before != total_now:
        keep = (
            f"set data.batch_size={total_before // world_size} to keep it on "
            f"{_processes(world_size)}, "
            if total_before % world_size == 0
            else f"resume on {_processes(written_by)}, "
        )
        raise CheckpointError(
            f"cannot resume from {path}: it was trained with a total batch of {total_before} "
            f"(data.batch_size {batch_before} x {_processes(written_by)}), and this run's "
            f"would be {total_now} (data.batch_size {batch_now} x {_processes(world_size)}); "
            f"{keep}or start a fresh run"
        )
    return [
        f"resumed on {_processes(world_size)} instead of {written_by}: the total batch stays "
        f"{total_now} (data.batch_size {batch_before} x {written_by} -> {batch_now} x "
        f"{world_size}); from here on the data order differs from a run on "
        f"{_processes(written_by)}, and BatchNorm statistics are computed per process on "
        f"{batch_now} images (unless runtime.sync_bn)"
    ]


def check_resume_config(
    state: dict, path: str | os.PathLike, cfg: Config, world_size: int | None = None
) -> list[str]:
    """The changes of `cfg` from the config that wrote `state` (read from `path`), to log.

    A change of a key outside `RESUME_MAY_CHANGE` is a CheckpointError naming every such
    key: the resumed run would not continue the run that wrote the checkpoint. Keys that
    only one of the two configs knows (another segls version) are not compared.
    `world_size` (default: torchrun's ``WORLD_SIZE``, else 1) is this run's number of
    processes: with another than the checkpoint's, ``data.batch_size`` may change so long
    as the total batch stays the same.
    """
    stored = state.get("config")
    if not isinstance(stored, dict):
        return [f"{path} holds no config to compare with; resuming under this run's config"]
    before, now = _fields(stored), _fields(to_dict(cfg))
    world_size = _world_size_from_env() if world_size is None else world_size
    processes = _check_total_batch(state, path, before, now, world_size)
    changed = sorted(key for key in before.keys() & now.keys() if before[key] != now[key])
    if processes:
        changed = [key for key in changed if key != "data.batch_size"]
    described = {key: f"{key} {show(before[key])} -> {show(now[key])}" for key in changed}
    refused = [described[key] for key in changed if key not in RESUME_MAY_CHANGE]
    if refused:
        raise CheckpointError(
            f"cannot resume from {path}: it was written with other settings ({'; '.join(refused)}"
            "); resume with the config it was written with (config.yaml in its work dir), or "
            "start a fresh run (docs/TROUBLESHOOTING.md lists the keys that may change on resume)"
        )
    return [*processes, *(f"changed on resume: {described[key]}" for key in changed)]
