"""Rows of docs/BAD_INPUTS.md that no other test file covers.

Each test feeds one kind of bad input and checks the documented outcome: the exception and
the words of its message, or the command line's exit status and message, and that nothing
on disk was lost or run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from helpers import tiny_config, write_dataset
from PIL import Image

from segls import config
from segls.cli import train as train_cli
from segls.config import ConfigError
from segls.data import DataError
from segls.models.weights import read_state_dict
from segls.runtime import distributed
from segls.train import CheckpointError, NonFiniteError, checkpoint, loop, train


class RunsCode:
    """Unpickling this calls ``Path(marker).touch()``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.mark.parametrize("loader", ["checkpoint", "encoder_weights"])
def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path, loader):
    marker = tmp_path / "owned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"weight": torch.zeros(1)}, "payload": RunsCode(marker)}, path)
    # The file really runs code when unpickled without weights_only (so the test can fail):
    control = tmp_path / "control.pth"
    torch.save({"payload": RunsCode(tmp_path / "control_ran")}, control)
    torch.load(control, weights_only=False)
    assert (tmp_path / "control_ran").exists()

    if loader == "checkpoint":
        with pytest.raises(CheckpointError, match="evil.pth"):
            checkpoint.load(path)
    else:
        with pytest.raises(ValueError, match="evil.pth"):
            read_state_dict(path)
    assert not marker.exists()


def test_a_config_that_constructs_python_objects_is_refused(tmp_path):
    marker = tmp_path / "owned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"runtime:\n  seed: !!python/object/apply:os.mkdir ['{marker}']\n")
    with pytest.raises(ConfigError, match="evil.yaml"):
        config.load(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.max_nonfinite_steps=0", "optimizer.max_nonfinite_steps = 0: use 1 or more"),
        ("runtime.sync_bn=yes", "runtime.sync_bn = 'yes' is str, expected bool"),
    ],
)
def test_new_config_keys_are_checked(tmp_path, override, message):
    path = tmp_path / "c.yaml"
    path.write_text("name: c\n")
    with pytest.raises(ConfigError, match=message):
        config.load(path, [override])


def test_sync_bn_on_cpu_processes_is_refused():
    context = distributed.Context(rank=0, world_size=2, device=torch.device("cpu"))
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    with pytest.raises(ConfigError, match="runtime.sync_bn=true needs CUDA.*2 processes"):
        distributed.convert_sync_bn(model, True, context)


def test_one_named_gpu_for_several_torchrun_processes_is_refused(monkeypatch):
    env = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    for name, value in {**env, "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="runtime.device=cuda:1 names one GPU.*2 processes"):
        distributed.setup(torch.device("cuda", 1))
    assert not torch.distributed.is_initialized()


@pytest.fixture
def tiny_setup(tmp_path):
    """A dataset and the config file of a tiny run."""
    cfg = tiny_config(write_dataset(tmp_path / "data"), runtime={"vis_samples": 0})
    path = tmp_path / "tiny.yaml"
    config.dump(cfg, path)
    return cfg, path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.yaml"], "error: config file"),
        (["{cfg}", "schedule.max_iter=2"], "did you mean 'schedule.max_iters'"),
        (["{cfg}", "data.root=nowhere"], "error: data.root='nowhere'"),
        (["{cfg}", "--resume"], "error: cannot resume: {work}/latest.pth does not exist"),
        (["{cfg}", "--resume", "{work}/nope.pth"], "error: checkpoint {work}/nope.pth does not"),
    ],
)
def test_the_command_line_turns_bad_input_into_one_message_and_exit_1(
    tiny_setup, tmp_path, capsys, args, message
):
    _, config_path = tiny_setup
    work_dir = tmp_path / "run"
    argv = [arg.format(cfg=config_path, work=work_dir) for arg in args]
    assert train_cli.run([*argv, "--work-dir", str(work_dir)]) == 1
    error = capsys.readouterr().err
    assert message.format(work=work_dir) in error
    assert "Traceback" not in error


def test_an_unknown_flag_is_a_usage_error(tiny_setup, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        train_cli.run([str(tiny_setup[1]), "--gpus", "2"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --gpus" in capsys.readouterr().err
    assert not (tmp_path / "work_dirs").exists()


def test_resuming_with_a_checkpoint_of_another_model_names_it(tiny_setup, tmp_path, capsys):
    cfg, config_path = tiny_setup
    train(tiny_config(cfg.data.root, schedule={"max_iters": 2}), tmp_path / "unet")
    other = config.to_dict(cfg)
    other["model"]["kwargs"]["decoder_channels"] = [8, 8, 8]
    other_path = tmp_path / "other.yaml"
    config.dump(config.from_dict(other), other_path)
    given = tmp_path / "unet" / "latest.pth"
    before = given.read_bytes()
    argv = [str(other_path), "--work-dir", str(tmp_path / "run"), "--resume", str(given)]
    assert train_cli.run(argv) == 1
    error = capsys.readouterr().err
    assert f"error: cannot resume from {given}: it was written with other settings" in error
    assert "model.kwargs" in error  # the key that differs
    assert given.read_bytes() == before


@pytest.mark.filterwarnings(
    "ignore:Detected call of `lr_scheduler.step\\(\\)` before"
)  # no step taken
def test_float_images_with_nan_pixels_stop_training_without_a_checkpoint(tmp_path):
    root = tmp_path / "data"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for index in range(2):
            image = np.full((32, 32, 2), np.nan, np.float32)
            tifffile.imwrite(root / "images" / split / f"n{index}.tif", image)
            Image.fromarray(np.ones((32, 32), np.uint8)).save(
                root / "masks" / split / f"n{index}.png"
            )
    cfg = tiny_config(root, optimizer={"max_nonfinite_steps": 2}, runtime={"vis_samples": 0})
    with pytest.raises(NonFiniteError, match="stopped at iter 2.*no step of this run had a finite"):
        train(cfg, tmp_path / "run")
    assert not list((tmp_path / "run").glob("*.pth"))


def test_a_training_image_with_nan_pixels_is_named_when_its_step_is_skipped(tmp_path):
    root = write_dataset(tmp_path / "data")
    bad = root / "images" / "train" / "s2.tif"
    image = tifffile.imread(bad).astype(np.float32)
    image[3:13, 3:13] = np.nan
    tifffile.imwrite(bad, image)
    cfg = tiny_config(
        root,
        data={"scaling": "percentile"},
        optimizer={"max_nonfinite_steps": 1},
        runtime={"vis_samples": 0},
    )
    with pytest.raises(NonFiniteError) as error:
        train(cfg, tmp_path / "run")
    assert f"the skipped batches held NaN/inf pixels in {bad}. No checkpoint" in str(error.value)
    others = [root / "images" / "train" / f"s{index}.tif" for index in (0, 1, 3)]
    assert not any(str(path) in str(error.value) for path in others)


def test_a_bad_validation_mask_fails_before_any_training_step(tmp_path, monkeypatch):
    root = write_dataset(tmp_path / "data")
    mask_path = root / "masks" / "val" / "s1.png"
    mask = np.array(Image.open(mask_path))
    mask[7, 7] = 7
    Image.fromarray(mask).save(mask_path)
    steps = []
    monkeypatch.setattr(loop, "train_one_iter", lambda *args, **kwargs: steps.append(1))
    with pytest.raises(DataError, match=f"{mask_path}: mask values \\[7\\] are neither"):
        train(tiny_config(root, runtime={"vis_samples": 0}), tmp_path / "run")
    assert steps == [] and not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", ["malicious", "corrupt"])
def test_encoder_weights_that_are_malicious_or_corrupt_get_one_line_without_torchs_advice(
    tiny_setup, tmp_path, capsys, kind
):
    _, config_path = tiny_setup
    marker = tmp_path / "owned"
    weights = tmp_path / "encoder.pth"
    if kind == "malicious":
        torch.save({"conv1.weight": torch.zeros(1), "payload": RunsCode(marker)}, weights)
        reason = "it holds a pickled Python object ("
    else:
        weights.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
        reason = "it is truncated, corrupt or not a torch file"
    argv = [str(config_path), "--work-dir", str(tmp_path / "run")]
    assert train_cli.run([*argv, f"model.encoder_weights={weights}"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: model.encoder_weights: cannot read {weights}: {reason}")
    assert error.count("\n") == 1 and "weights_only" not in error and "Traceback" not in error
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_a_corrupt_checkpoint_message_does_not_pass_on_torchs_advice(tmp_path):
    garbage = tmp_path / "latest.pth"
    garbage.write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError) as error:
        checkpoint.load(garbage)
    assert str(error.value) == (
        f"cannot read checkpoint {garbage}: it is truncated, corrupt or not a torch file "
        "(UnpicklingError: Unsupported operand 103); use another checkpoint or start afresh"
    )
