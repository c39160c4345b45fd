"""Training: build a run from a config, step it, evaluate, save and restore checkpoints.

`build` makes a `Run` (everything a run needs) from a Config, `loop` trains it (`train`,
`train_one_iter`), `validation` evaluates during training, `optim` holds the optimizer and
the learning rate as a function of the iteration, `checkpoint` what a training checkpoint
holds (save, restore, resume; reading files and weights for inference is
`segls.models.checkpoint`), `resume` what a resumed run may change, `faults` non-finite
steps and stop signals, `census` the classes the labels use, `logger` the run's records,
`workdir` the rules of the directory they go to, `lock` the lock a run holds on it,
`smoothing` trains a config at several ε and compares (tools/compare_smoothing.py).
"""

from __future__ import annotations

from segls.lazy import lazy_exports

# Loaded on first use, so that a command takes the work dir's lock (`segls.train.lock`) and
# reports a busy work dir before torch is imported.
_SOURCES = {
    "CheckpointError": "checkpoint",
    "NonFiniteError": "faults",
    "Run": "build",
    "TrainingInterrupted": "faults",
    "WorkDirError": "workdir",
    "build_objective": "build",
    "build_run": "build",
    "hold_work_dir": "lock",
    "restore": "checkpoint",
    "train": "loop",
    "train_one_iter": "loop",
}
__all__ = sorted(_SOURCES)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _SOURCES)
