"""What several test files share: a tiny dataset and config, records, checkpoints, processes.

The processes are forked from a multiprocessing forkserver that has imported segls once,
which keeps multi-process tests fast (test_runtime_distributed, test_train_faults).
"""

from __future__ import annotations

import copy
import errno
import json
import math
import multiprocessing
import os
import socket
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from segls import config, io
from segls.models import build_model
from segls.train import checkpoint
from segls.train.optim import build_ema, build_optimizer

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASS_NAMES = ["back", "ring", "core"]


# Cityscapes labelIds of the 19 evaluated classes -> train ids, from the brief's standard table.
CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
    25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip


def write_rgb(path: Path, height: int = 6, width: int = 7, seed: int = 0) -> np.ndarray:
    """Random RGB image saved with PIL (png/jpg by suffix); returns the pixels written."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path)
    return pixels


def write_gray_mask(path: Path, values: np.ndarray) -> None:
    """Single-channel (mode L) mask PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8), "L").save(path)


def make_cityscapes(root: Path, label_ids: np.ndarray, kind: str, split: str = "val") -> None:
    """leftImg8bit/<split>/<city>/..._leftImg8bit.png + gtFine/.../..._gtFine_<kind>.png."""
    names = {"frankfurt": "frankfurt_000000_000294", "lindau": "lindau_000000_000019"}
    for city, name in names.items():
        write_rgb(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", *label_ids.shape)
        write_gray_mask(root / "gtFine" / split / city / f"{name}_gtFine_{kind}.png", label_ids)
        write_gray_mask(root / "gtFine" / split / city / f"{name}_gtFine_color.png", label_ids)


def make_ade20k(root: Path, annotation: np.ndarray, folder: str) -> None:
    """ADEChallengeData2016: images/<folder>/*.jpg, annotations/<folder>/*.png."""
    name = "ADE_train_00000001" if folder == "training" else "ADE_val_00000001"
    write_rgb(root / "images" / folder / f"{name}.jpg", *annotation.shape)
    write_gray_mask(root / "annotations" / folder / f"{name}.png", annotation)


SIZE = (40, 56)  # the images make_dataset writes


def make_image(kind: str, rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """An image whose brightness follows the mask, in the storage `kind` names."""
    height, width = mask.shape
    mask = mask.astype(np.int64)
    if kind == "rgb8":
        base = rng.integers(0, 200, (height, width, 3)) + 25 * mask[..., None].clip(0, 2)
        return base.clip(0, 255).astype(np.uint8)
    if kind == "u16x2":
        gain = rng.uniform(0.8, 1.2)
        signal = 500 + 400 * mask.clip(0, 2) + rng.integers(0, 300, mask.shape)
        return np.stack([signal * gain, rng.normal(2000, 100, mask.shape)], -1).astype(np.uint16)
    if kind == "float1":
        return (rng.normal(1.0, 2.0, (height, width)) + mask.clip(0, 2))[..., None].astype(
            np.float32
        )
    return rng.uniform(0, 1, (height, width, 2)).astype(np.float32)


def blob_mask(rng: np.random.Generator, num_classes: int, size=SIZE, ignore=0.0) -> np.ndarray:
    """Blocky random classes (8-pixel blocks), a share `ignore` of the pixels set to 255."""
    blocks = rng.integers(0, num_classes, (size[0] // 8 + 1, size[1] // 8 + 1))
    mask = np.kron(blocks, np.ones((8, 8), np.int64))[: size[0], : size[1]].astype(np.uint8)
    mask[rng.random(size) < ignore] = 255
    return mask


def write_pair(root: Path, split: str, stem: str, image: np.ndarray, mask: np.ndarray) -> None:
    """Write an image (PNG for 8-bit RGB, TIFF otherwise) and its PNG mask."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "masks" / split).mkdir(parents=True, exist_ok=True)
    if image.dtype == np.uint8 and image.shape[-1] == 3:
        Image.fromarray(image).save(root / "images" / split / f"{stem}.png")
    else:
        data = image[..., 0] if image.shape[-1] == 1 else image
        tifffile.imwrite(root / "images" / split / f"{stem}.tif", data, photometric="minisblack")
    Image.fromarray(mask).save(root / "masks" / split / f"{stem}.png")


def make_dataset(
    root: Path, kind: str = "rgb8", counts=None, num_classes: int = 3, classes_file=True, seed=0
) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """A folder dataset; returns {split: [(stem, image, mask), ...]} as written."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, count in (counts or {"train": 6, "val": 2}).items():
        written[split] = []
        for index in range(count):
            mask = blob_mask(rng, num_classes, ignore=0.02)
            image = make_image(kind, rng, mask)
            image = image if image.ndim == 3 else image[..., None]
            write_pair(root, split, f"{split}{index}", image, mask)
            written[split].append((f"{split}{index}", image, mask))
    if classes_file:
        names = "".join(f"name{c}\n" for c in range(num_classes))
        (root / "classes.txt").write_text(names)
    return written


def write_images(root, split, images, masks):
    """Write uint8 single-channel TIFF images and PNG masks."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "masks" / split).mkdir(parents=True, exist_ok=True)
    for index, (image, mask) in enumerate(zip(images, masks, strict=True)):
        tifffile.imwrite(root / "images" / split / f"{split}{index}.tif", image)
        Image.fromarray(mask).save(root / "masks" / split / f"{split}{index}.png")


def square_dataset(root, count: int, side: int) -> None:
    """`count` training and 2 validation uint8 images of side x side pixels, 2 classes."""
    rng = np.random.default_rng(0)
    for split, number in (("train", count), ("val", 2)):
        masks = [blob_mask(rng, 2, (side, side)) for _ in range(number)]
        images = [rng.integers(0, 255, (side, side), dtype=np.uint8) for _ in range(number)]
        write_images(root, split, images, masks)


def pixels_of(items) -> np.ndarray:
    """All pixels of the images in `items`, as an N × C array."""
    return np.concatenate([image.reshape(-1, image.shape[-1]) for _, image, _ in items])


# Every random transform on, for tests that must reproduce augmented runs exactly.
AUGMENTING = {
    "crop_size": [24, 24],
    "scale_range": [0.75, 1.25],
    "hflip": 0.5,
    "vflip": 0.5,
    "photometric": 0.5,
}


def write_dataset(root: Path, num_train: int = 4, num_val: int = 2, size: int = 32) -> Path:
    """A folder-format dataset of 2-channel uint16 TIFFs with 3-class masks (row 0 ignored)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", num_train), ("val", num_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for index in range(count):
            mask = np.zeros((size, size), np.uint8)
            top, left = rng.integers(2, size // 2, 2)
            mask[top : top + size // 2, left : left + size // 2] = 1
            mask[top + 4 : top + size // 2 - 4, left + 4 : left + size // 2 - 4] = 2
            mask[0, :] = 255
            signal = mask.astype(np.int64) * 20000 + rng.integers(0, 4000, mask.shape)
            noise = rng.integers(0, 65535, mask.shape)
            image = np.stack([signal, noise], axis=-1).astype(np.uint16)
            tifffile.imwrite(root / "images" / split / f"s{index}.tif", image)
            Image.fromarray(mask).save(root / "masks" / split / f"s{index}.png")
    return root


def tiny_config(root: Path, **sections) -> config.Config:
    """A config that trains a ~80k-parameter Unet on the tiny dataset in a few seconds."""
    tree = {
        "data": {
            "root": str(root),
            "in_channels": 2,
            "mean": [0.2, 0.5],
            "std": [0.2, 0.3],
            "class_names": CLASS_NAMES,
            "crop_size": [32, 32],
            "scale_range": [1.0, 1.0],
            "batch_size": 2,
            "num_workers": 0,
        },
        "model": {
            "arch": "Unet",
            "encoder": "tu-test_resnet",
            "kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 8]},
        },
        "optimizer": {"lr": 0.01},
        "schedule": {
            "max_iters": 4,
            "warmup_iters": 1,
            "eval_interval": 2,
            "checkpoint_interval": 2,
            "log_interval": 1,
        },
        "runtime": {"device": "cpu", "num_threads": 1, "vis_samples": 2},
    }
    for section, values in sections.items():
        tree[section] = {**tree.get(section, {}), **values}
    return config.from_dict(tree)


def read_events(work_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(work_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def read_metrics(work_dir: Path) -> list[dict]:
    lines = (work_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def save_checkpoint(cfg: config.Config, path: Path, ema: bool = True) -> nn.Module:
    """A training checkpoint of a random-init model; returns the model the tools should use.

    With `ema`, the checkpoint's ``model`` weights are those of the returned model with the
    class-0 bias raised by 1000 (they predict class 0 everywhere), and its ``ema`` weights
    are the returned model's; without, ``model`` holds the returned model's weights.
    """
    torch.manual_seed(0)
    wanted = build_model(cfg.model, cfg.data.in_channels, cfg.data.num_classes).eval()
    trained = copy.deepcopy(wanted)
    averaged = None
    if ema:
        with torch.no_grad():
            trained.segmentation_head[0].bias[0] += 1000.0
        averaged = build_ema(wanted, 0.5)
        averaged.update_parameters(wanted)
    optimizer = build_optimizer(trained, cfg.optimizer)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    state = checkpoint.training_state(
        trained, optimizer, scaler, 0, -math.inf, config.to_dict(cfg), averaged
    )
    io.write_torch(path, state)
    return wanted


class FullDisk:
    """A file that takes `room` bytes, then fails every write as a full disk does (ENOSPC)."""

    def __init__(self, handle, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.handle.close()


# ---- running code in other processes ----------------------------------------------------

FORKSERVER = multiprocessing.get_context("forkserver")
# Preloaded once, so that forked processes start with segls imported and find the targets.
FORKSERVER.set_forkserver_preload(
    ["segls.train", "helpers", "test_runtime_distributed", "test_train_faults"]
)
TIMEOUT_S = 240


def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _child(target, args: tuple, env: dict, log_path: str, result_path: str) -> None:
    """Body of a forked process: set env, send output to `log_path`, save target's result."""
    os.environ.update(env)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    try:
        result = target(*args)
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    torch.save(result, result_path)


def start(target, args: tuple, out_dir: Path, name: str, env: dict | None = None):
    """Start `target(*args)` in a process forked from the forkserver; see `finish`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = str(out_dir / f"{name}.log"), str(out_dir / f"{name}.result.pth")
    process = FORKSERVER.Process(target=_child, args=(target, args, env or {}, *paths))
    process.start()
    process.log_path, process.result_path = paths
    return process


def output_of(process) -> str:
    """What the process printed."""
    path = Path(process.log_path)
    return path.read_text(errors="replace") if path.exists() else ""


def finish(process, expect_exit: int | None = 0, timeout: float = TIMEOUT_S):
    """Wait for `process`; check its exit code; return its target's result (None if none)."""
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join()
        pytest.fail(f"process timed out after {timeout} s:\n{output_of(process)[-4000:]}")
    if expect_exit is not None and process.exitcode != expect_exit:
        pytest.fail(
            f"process exited with {process.exitcode}, expected {expect_exit}:\n"
            f"{output_of(process)[-4000:]}"
        )
    if not Path(process.result_path).exists():
        return None
    return torch.load(process.result_path, weights_only=False)


def torchrun_env(rank: int, world: int, port: int) -> dict:
    """The environment variables torchrun gives `rank` of `world` processes on one machine."""
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def run_ranks(target, args: tuple, world: int, out_dir: Path) -> list:
    """`target(*args)` in `world` processes with the environment torchrun gives its ranks."""
    port = free_port()
    processes = [
        start(target, args, out_dir, f"rank{rank}", torchrun_env(rank, world, port))
        for rank in range(world)
    ]
    return [finish(process) for process in processes]
