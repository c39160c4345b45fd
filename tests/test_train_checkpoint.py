"""Tests of checkpoint I/O: atomic saves, safe loads, clear errors, training-state round trips."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from helpers import tiny_config, write_dataset
from torch import nn

from segls import io, runtime
from segls.models.checkpoint import load_weights
from segls.train import CheckpointError, checkpoint, loop, train
from segls.train.optim import set_lr


def test_truncated_checkpoint_error_names_the_file(tmp_path):
    path = tmp_path / "latest.pth"
    io.write_torch(path, {"weights": torch.zeros(1000)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="latest.pth.*truncated, corrupt"):
        checkpoint.load(path)


def test_garbage_missing_and_non_dict_checkpoints_are_named(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        checkpoint.load(garbage)
    with pytest.raises(CheckpointError, match="missing.pth does not exist"):
        checkpoint.load(tmp_path / "missing.pth")
    listed = tmp_path / "list.pth"
    torch.save([1, 2], listed)
    with pytest.raises(CheckpointError, match="list.pth holds a list"):
        checkpoint.load(listed)


class Custom:
    pass


def test_load_refuses_arbitrary_pickled_objects(tmp_path):
    path = tmp_path / "unsafe.pth"
    torch.save({"thing": Custom()}, path)
    with pytest.raises(CheckpointError, match="unsafe.pth"):
        checkpoint.load(path)


def test_rng_state_survives_a_weights_only_round_trip(tmp_path):
    runtime.seed_everything(123)
    random.random(), np.random.normal(), torch.rand(1)  # noqa: B018 - move the streams on
    io.write_torch(tmp_path / "rng.pth", {"rng": runtime.get_rng_state()})
    expected = random.random(), np.random.normal(), np.random.normal(), torch.rand(3)
    runtime.seed_everything(999)
    runtime.set_rng_state(checkpoint.load(tmp_path / "rng.pth")["rng"])
    drawn = random.random(), np.random.normal(), np.random.normal(), torch.rand(3)
    assert drawn[:3] == expected[:3]
    assert torch.equal(drawn[3], expected[3])


def make_objects(seed: int, lr: float = 0.1, momentum: float = 0.9):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return model, optimizer, scaler


def take_steps(model, optimizer, first: int, count: int) -> None:
    """Steps `first` .. `first + count - 1`, each at the learning rate 1 / (1 + step)."""
    for step in range(first, first + count):
        set_lr(optimizer, 1 / (1 + step))
        optimizer.zero_grad()
        model(torch.ones(1, 2, 5, 5)).square().mean().backward()
        optimizer.step()


def test_training_state_round_trip_continues_identically(tmp_path):
    objects = make_objects(0)
    take_steps(*objects[:2], 0, 3)
    state = checkpoint.training_state(*objects, 3, 0.25, {"schedule": {"max_iters": 9}})
    io.write_torch(tmp_path / "latest.pth", state)
    take_steps(*objects[:2], 3, 2)

    restored = make_objects(1)
    loaded = checkpoint.load(tmp_path / "latest.pth")
    assert loaded["config"] == {"schedule": {"max_iters": 9}}
    iteration = checkpoint.check_training_state(loaded, tmp_path / "latest.pth")
    checkpoint.load_states(loaded, tmp_path / "latest.pth", *restored)
    assert (iteration, loaded["best_miou"]) == (3, 0.25)
    take_steps(*restored[:2], iteration, 2)
    for name, tensor in objects[0].state_dict().items():
        assert torch.equal(tensor, restored[0].state_dict()[name]), name
    assert restored[1].param_groups[0]["lr"] == objects[1].param_groups[0]["lr"] == 1 / 5


def test_restore_keeps_the_hyper_parameters_the_optimizer_was_built_with(tmp_path):
    objects = make_objects(0, lr=0.1, momentum=0.9)
    take_steps(*objects[:2], 0, 2)
    state = checkpoint.training_state(*objects, 2, 0.0, {})
    restored = make_objects(0, lr=0.5, momentum=0.5)
    checkpoint.load_states(state, "x.pth", *restored)
    assert restored[1].param_groups[0]["momentum"] == 0.5
    assert restored[1].state_dict()["state"][0]["momentum_buffer"] is not None


def test_restore_into_another_model_names_the_file():
    objects = make_objects(0)
    state = checkpoint.training_state(*objects, 1, 0.0, {})
    other = nn.Sequential(nn.Conv2d(2, 4, 3))
    optimizer = torch.optim.SGD(other.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    with pytest.raises(CheckpointError, match="old.pth does not fit"):
        checkpoint.load_states(state, "old.pth", other, optimizer, scaler)
    with pytest.raises(CheckpointError, match="not a segls training checkpoint"):
        checkpoint.check_training_state({"model": {}}, "w.pth")


def test_compiled_or_wrapped_models_save_plain_state_dicts():
    model = nn.Linear(2, 2)

    class Wrapper(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    assert checkpoint.unwrap_model(Wrapper(model)) is model
    objects = make_objects(0)
    state = checkpoint.training_state(Wrapper(objects[0]), *objects[1:], 0, 0.0, {})
    assert set(state["model"]) == set(objects[0].state_dict())


def test_unknown_format_versions_are_refused_with_the_versions_this_segls_reads(tmp_path):
    objects = make_objects(0)
    state = checkpoint.training_state(*objects, 1, 0.0, {})
    assert state["format"] == checkpoint.FORMAT_VERSION == 2
    state["format"] = 3
    path = tmp_path / "future.pth"
    io.write_torch(path, state)
    message = r"future.pth has format version 3, but this segls reads versions 1, 2"
    with pytest.raises(CheckpointError, match=message):
        checkpoint.check_training_state(checkpoint.load(path), path)
    with pytest.raises(CheckpointError, match=message):
        load_weights(objects[0], path)
    with pytest.raises(CheckpointError, match=r"lacks \['format'\]"):
        checkpoint.check_training_state({k: v for k, v in state.items() if k != "format"}, path)


class Interrupted(Exception):
    pass


def test_a_format_1_checkpoint_with_a_scheduler_entry_resumes_exactly(tmp_path, monkeypatch):
    cfg = tiny_config(
        write_dataset(tmp_path / "data"),
        schedule={"max_iters": 4, "checkpoint_interval": 2},
        runtime={"deterministic": True, "vis_samples": 0},
    )
    train(cfg, tmp_path / "straight")
    real_step, calls = loop.train_one_iter, []

    def step_then_crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # after the checkpoint at iteration 2
            raise Interrupted
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_one_iter", step_then_crash)
    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "old")
    monkeypatch.undo()
    latest = tmp_path / "old" / "latest.pth"
    old = checkpoint.load(latest)  # as format 1 wrote it: LambdaLR's state beside the rest
    old["format"], old["scheduler"] = 1, {"last_epoch": 2, "base_lrs": [0.01, 0.01]}
    io.write_torch(latest, old)
    train(cfg, tmp_path / "old", resume=True)
    resumed = checkpoint.load(latest)
    straight = checkpoint.load(tmp_path / "straight" / "latest.pth")
    assert resumed["iter"] == straight["iter"] == 4 and resumed["format"] == 2
    assert "scheduler" not in resumed
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
