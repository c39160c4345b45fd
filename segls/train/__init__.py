"""Training: build a run from a config, step it, evaluate, save and restore checkpoints.

`build` makes a `Run` (everything a run needs) from a Config, `loop` trains it (`train`,
`train_one_iter`), `validation` evaluates during training, `optim` holds the optimizer and
the learning rate as a function of the iteration, `checkpoint` what a training checkpoint
holds (save, restore, resume; reading files and weights for inference is
`segls.models.checkpoint`), `resume` what a resumed run may change, `faults` non-finite
steps and stop signals, `census` the classes the labels use, `logger` the run's records,
`workdir` the rules of the directory they go to, `smoothing` trains a config at several ε
and compares (tools/compare_smoothing.py).
"""

from segls.train.build import Run, build_objective, build_run
from segls.train.checkpoint import CheckpointError, restore
from segls.train.faults import NonFiniteError, TrainingInterrupted
from segls.train.loop import train, train_one_iter
from segls.train.workdir import WorkDirError

__all__ = [
    "CheckpointError",
    "NonFiniteError",
    "Run",
    "TrainingInterrupted",
    "WorkDirError",
    "build_objective",
    "build_run",
    "restore",
    "train",
    "train_one_iter",
]
