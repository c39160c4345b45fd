"""Config mistakes found by fault tests (issue 23): each is one ConfigError line, found at load."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO_ROOT

from segls import config
from segls.config import ConfigError

CONFIG = str(REPO_ROOT / "configs/unet_resnet18_scratch_64x64_600.yaml")


def load_error(path: str | Path = CONFIG, overrides=()) -> str:
    """The message of the ConfigError that loading raises (one line)."""
    with pytest.raises(ConfigError) as info:
        config.load(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.arch=Unett", "model.arch = 'Unett': did you mean 'Unet'"),
        ("model.encoder=resnet1800", "model.encoder = 'resnet1800': did you mean 'resnet18'"),
        ("model.kwargs.decoder_chanels=[8]", "did you mean 'decoder_channels'"),
        ("model.kwargs.foo=1", "smp.Unet has no argument 'foo'; model.kwargs may set"),
        ("model.kwargs.encoder_depth=9", "encoder_depth = 9: use an int from 1 to 5"),
        ("model.kwargs.encoder_depth=true", "encoder_depth = true: use an int from 1 to 5"),
        (
            "model.kwargs.encoder_depth=3",
            "model.kwargs.decoder_channels = [128, 64, 32, 16, 8]: smp.Unet has one decoder block "
            "per encoder stage, so model.kwargs.decoder_channels needs "
            "model.kwargs.encoder_depth=3 values but has 5",
        ),
    ],
)
def test_model_names_and_kwargs_are_checked_at_load(override, expected):
    assert expected in load_error(overrides=[override])


@pytest.mark.parametrize(
    "override",
    ["model.encoder=tu-convnext_tiny", "model.encoder=efficientnet-lite0", "model.arch=unet++"],
)
def test_timm_encoders_and_aliases_pass_the_load_check(override):
    config.load(CONFIG, [override])


def billion_laughs(levels: int = 30) -> str:
    """model.kwargs whose aliases expand to 9**levels values (a few hundred bytes of YAML)."""
    lines = ["model:", "  kwargs:", "    x0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, levels):
        lines.append(f"    x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


HOSTILE_FILES = {
    "binary.yaml": (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "binary.yaml is a binary file"),
    "latin1.yaml": ("name: caf\xe9\n".encode("latin-1"), "not UTF-8 text (byte 0xe9"),
    "deep_list.yaml": (
        ("data:\n  mean: " + "[" * 5000 + "]" * 5000 + "\n").encode(),
        "nested more than 100 levels deep",
    ),
    "deep_map.yaml": (
        ("model:\n  kwargs: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n").encode(),
        "nested more than 100 levels deep",
    ),
    "laughs.yaml": (billion_laughs().encode(), "expand to more than 100,000 values"),
    "cycle.yaml": (b"model:\n  kwargs: &a {x: *a}\n", "an alias refers to the collection"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_FILES))
def test_hostile_files_are_one_line_at_once(tmp_path, name):
    content, expected = HOSTILE_FILES[name]
    path = tmp_path / name
    path.write_bytes(content)
    start = time.perf_counter()
    message = load_error(path)
    assert time.perf_counter() - start < 1.0
    assert expected in message and name in message


def test_a_deep_override_is_one_line():
    assert "nested more than 100 levels" in load_error(overrides=["data.mean=" + "[" * 5000])


def test_the_command_line_reports_hostile_files_in_one_line_before_torch(tmp_path):
    for name, (content, _) in HOSTILE_FILES.items():
        (tmp_path / name).write_bytes(content)
    code = (
        "import sys, time\n"
        "from segls.cli import train\n"
        "for path in sys.argv[1:]:\n"
        "    assert train.run([path]) == 1\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    paths = [str(tmp_path / name) for name in sorted(HOSTILE_FILES)]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, *paths], env=env, capture_output=True, text=True
    )
    assert time.perf_counter() - start < 2.0 * len(paths)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    errors = done.stderr.splitlines()
    assert len(errors) == len(paths) and all(line.startswith("error: ") for line in errors)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n# and another\n"])
def test_an_empty_or_comment_only_file_is_refused(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert "c.yaml is empty (or holds only comments)" in load_error(path)


def test_a_duplicated_key_is_refused_naming_both_lines(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\n")
    (tmp_path / "b.yaml").write_text("name: b\n")
    path = tmp_path / "c.yaml"
    path.write_text("_base_: a.yaml\n_base_: b.yaml\n")
    message = load_error(path)
    assert "c.yaml: line 2: the key '_base_' is given twice (also on line 1)" in message
    path.write_text("data:\n  batch_size: 2\n  crop: 1\n  batch_size: 4\n")
    assert "line 4: the key 'batch_size' is given twice" in load_error(path)


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("x: &d {batch_size: 2}\ndata: {<<: *d, batch_size: 4}\n")
    assert "unknown key 'x'" in load_error(path)  # loaded; only the unknown key is refused


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("schedule.max_iters=" + "1" + "0" * 30, "use at most 1,000,000,000"),
        ("data.class_names=[a, a, b]", "give each class its own name (['a'] repeat)"),
    ],
)
def test_values_accepted_silently_before_are_refused(override, expected):
    assert expected in load_error(overrides=[override])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.crop_size=[100000,100000]", "data.crop_size = [100000, 100000]: use at most 16384"),
        ("data.scale_range=[1e4,1e4]", "data.scale_range = [10000.0, 10000.0]: use factors of"),
        ("eval.scales=[1e4]", "eval.scales = [10000.0]: use factors of at most 10"),
        ("eval.crop_size=[20000,64]", "eval.crop_size = [20000, 64]: use at most 16384"),
    ],
)
def test_sizes_that_cannot_be_allocated_are_refused_at_load(override, key):
    assert key in load_error(overrides=[override])


ALLOCATOR = (
    "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried"
)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("segls.train.loop.train_one_iter", "training at iter 1 ran out of memory"),
        ("segls.train.validation.Validation.scores", "the evaluation at iter 2 ran out of memory"),
    ],
)
def test_an_allocation_failure_in_training_or_evaluation_names_the_settings(
    tmp_path, monkeypatch, capsys, target, expected
):
    from helpers import tiny_config, write_dataset

    from segls.cli.training import run_training_command
    from segls.train import train

    cfg = tiny_config(write_dataset(tmp_path / "data"))

    def fail(*args, **kwargs):
        raise RuntimeError(f"{ALLOCATOR} to allocate 1600000000000 bytes.")

    monkeypatch.setattr(target, fail)
    status = run_training_command(lambda argv: train(cfg, tmp_path / "work"), [])
    errors = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(errors) == 1
    assert errors[0].startswith(f"error: {expected} (") and "can't allocate memory" in errors[0]
    setting = "data.batch_size" if "training" in expected else "eval.scales"
    assert f"lower {setting}" in errors[0]


@pytest.mark.parametrize(
    ("target", "argv", "expected"),
    [
        ("segls.predict.evaluation.predict_logits", [], "the evaluation ran out of memory"),
        ("segls.predict.files.predict_logits", ["--save-masks"], "writing the masks ran out"),
    ],
)
@pytest.mark.parametrize("error", ["torch.OutOfMemoryError", "CPU allocator's RuntimeError"])
def test_tools_test_running_out_of_memory_is_one_line_naming_the_settings(
    tmp_path, monkeypatch, capsys, target, argv, expected, error
):
    import torch
    from helpers import save_checkpoint, tiny_config, write_dataset

    from segls.cli import test as test_cli

    cfg = tiny_config(write_dataset(tmp_path / "data"))
    config_path, checkpoint_path = tmp_path / "tiny.yaml", tmp_path / "best.pth"
    config.dump(cfg, config_path)
    save_checkpoint(cfg, checkpoint_path)

    def fail(*args, **kwargs):
        if error == "torch.OutOfMemoryError":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 6.00 GiB")
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 6 GB")

    monkeypatch.setattr(target, fail)
    status = test_cli.run([str(config_path), str(checkpoint_path), *argv])
    errors = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(errors) == 1, errors
    assert errors[0].startswith(f"error: {expected}") and "memory" in errors[0]
    assert "lower eval.scales, data.val_batch_size" in errors[0] and "--scales" in errors[0]


def test_a_crop_far_above_every_training_image_is_refused_when_the_data_is_read(
    tmp_path, monkeypatch
):
    from helpers import tiny_config, write_dataset

    from segls.data import build_dataset, check_crop_size
    from segls.train import train

    data = write_dataset(tmp_path / "data")  # 32×32 images
    built = []
    monkeypatch.setattr("segls.train.build.build_model", lambda *args: built.append(args))
    cfg = tiny_config(data, data={"crop_size": [129, 64]})
    expected = (
        r"data.crop_size = \[129, 64\] is more than 4 times the longest side of the largest "
        r"training image \(32 pixels, 32 at the high end of data.scale_range\)"
    )
    with pytest.raises(ConfigError, match=expected) as info:
        train(cfg, tmp_path / "work")
    assert "\n" not in str(info.value) and not built  # before the model is built
    # Up to 4 times the images (padded), or more where random scaling enlarges them: allowed.
    for crop, scale in (([128, 128], [1.0, 1.0]), ([250, 200], [1.0, 2.0])):
        cfg = tiny_config(data, data={"crop_size": crop, "scale_range": scale})
        check_crop_size(build_dataset(cfg.data, cfg.data.train_split, train=True), cfg.data)
