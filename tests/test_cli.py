"""Tests of what the command lines share: a bad config is reported before torch is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from helpers import REPO_ROOT

from segls.cli import common

CONFIG = "configs/unet_resnet18_scratch_64x64_600.yaml"
HEAVY = ("torch", "segmentation_models_pytorch", "albumentations", "tensorboard", "timm")

# Runs in a fresh interpreter; prints the exit statuses and the heavy modules it imported.
CHILD = """
import json, sys, tempfile
from segls import config
cfg = config.load(CONFIG, ["optimizer.lr=0.01"])
config.validate(cfg)
config.dump(cfg, tempfile.mkdtemp() + "/config.yaml")
statuses = {}
for name, extra in COMMANDS.items():
    module = __import__(name, fromlist=["run"])
    statuses[name] = [module.run([*extra, bad]) for bad in ("bad.key=1", "data.format=nope")]
heavy = sorted(name for name in sys.modules if name.split(".")[0] in HEAVY)
print(json.dumps({"statuses": statuses, "heavy": heavy}))
"""
COMMANDS = {
    "segls.cli.train": [CONFIG],
    "segls.cli.test": [CONFIG, "missing.pth"],
    "segls.cli.infer": [CONFIG, "missing.pth", "in.png", "--out", "out"],
    "segls.cli.export": [CONFIG, "missing.pth", "--out", "m.onnx"],
    "segls.cli.compare_smoothing": [CONFIG],
    "benchmarks.cli.bench_train": [CONFIG],
}


def test_a_bad_config_is_reported_before_torch_is_imported():
    code = f"CONFIG = {CONFIG!r}\nCOMMANDS = {COMMANDS!r}\nHEAVY = {HEAVY!r}\n{CHILD}"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["heavy"] == []
    assert result["statuses"] == {name: [1, 1] for name in COMMANDS}
    errors = done.stderr.splitlines()
    assert errors.count(
        "error: command-line override 'bad.key=1': unknown key 'bad'; did you mean 'loss.backend'?"
    ) == len(COMMANDS)
    assert sum("data.format = 'nope': use one of folder, voc" in line for line in errors) == len(
        COMMANDS
    )


def test_run_command_statuses_and_one_line_errors(capsys):
    def failing(error: Exception):
        def main(argv):
            raise error

        return main

    assert common.run_command(lambda argv: 3) == 3
    assert common.run_command(lambda argv: {"mIoU": 1.0}) == 0
    assert common.run_command(failing(ValueError("bad value")), None, lambda: (ValueError,)) == 1
    assert capsys.readouterr().err == "error: bad value\n"
    try:
        common.run_command(failing(KeyError("not a user error")))
    except KeyError:
        pass
    else:
        raise AssertionError("an unexpected error must propagate")
