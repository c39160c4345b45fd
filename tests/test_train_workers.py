"""A bad file read in a DataLoader worker ends the run as it does without workers: one line,
exit 1, latest.pth intact, no worker left behind, within seconds (it used to hang forever:
the workers ignore SIGTERM and multiprocessing's exit handler waited on them)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO_ROOT, tiny_config, write_dataset
from PIL import Image
from torch.utils.data import DistributedSampler

from segls import config
from segls.data import DataError
from segls.train import checkpoint

EXIT_WAIT_S = 180  # the whole run on a busy 2-core machine; a hang is stopped here
EXIT_AFTER_ERROR_S = 15  # from the error line in train.log to the process gone


def tagged_processes(tag: str) -> list[int]:
    """The pids of the processes whose environment holds SEGLS_TEST_TAG=`tag` (any descendant)."""
    wanted = f"SEGLS_TEST_TAG={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory) -> tuple[Path, Path, Path]:
    """8 training images, batches of 2: the last batch of epoch 0 has a truncated image and a
    mask with the value 511 (16-bit); the first batch, read before training starts, is good."""
    root = write_dataset(tmp_path_factory.mktemp("workers") / "data", num_train=8)
    sampler = DistributedSampler(range(8), num_replicas=1, rank=0, shuffle=True, seed=0)
    sampler.set_epoch(0)
    order = list(sampler)
    image = root / "images" / "train" / f"s{order[-2]}.tif"
    image.write_bytes(image.read_bytes()[:300])
    mask_path = root / "masks" / "train" / f"s{order[-1]}.png"
    mask = np.array(Image.open(mask_path)).astype(np.uint16)
    mask[3, 3] = 511
    Image.fromarray(mask).save(mask_path)
    return root, image, mask_path


def write_config(root: Path, num_workers: int, path: Path) -> Path:
    """The config file of an 8-iteration run on `root` that saves latest.pth every iteration."""
    cfg = tiny_config(
        root,
        data={"num_workers": num_workers},
        schedule={"max_iters": 8, "checkpoint_interval": 1, "eval_interval": 100},
        runtime={"vis_samples": 0},
    )
    config.dump(cfg, path)
    return path


@pytest.fixture(scope="module")
def line_without_workers(bad_data, tmp_path_factory) -> str:
    """What the run prints when the same data is read in the main process (num_workers=0)."""
    base = tmp_path_factory.mktemp("no_workers")
    config_path = write_config(bad_data[0], 0, base / "tiny.yaml")
    process = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "train.py"), str(config_path),
         "--work-dir", str(base / "run")],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True,
        timeout=EXIT_WAIT_S,
    )  # fmt: skip
    assert process.returncode == 1, process.stderr
    return process.stderr.strip()


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
@pytest.mark.parametrize("num_workers", [2, 4])
def test_a_bad_file_in_a_loader_worker_ends_the_run_at_once_with_one_line(
    bad_data, line_without_workers, tmp_path, num_workers
):
    root, image, _ = bad_data
    config_path = write_config(root, num_workers, tmp_path / "tiny.yaml")
    work_dir = tmp_path / "run"
    tag = uuid.uuid4().hex
    env = {**os.environ, "SEGLS_TEST_TAG": tag, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, str(REPO_ROOT / "tools" / "train.py"), str(config_path)]
    process = subprocess.Popen(
        [*command, "--work-dir", str(work_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = process.communicate(timeout=EXIT_WAIT_S)
        exited = time.time()
    except subprocess.TimeoutExpired:
        for pid in tagged_processes(tag):  # the workers ignore SIGTERM
            os.kill(pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"the run did not exit within {EXIT_WAIT_S} s (hung on its workers)")
    left = tagged_processes(tag)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "loader workers outlived the run"
    assert process.returncode == 1, err
    # One line, the same as without workers (torch may warn first that 4 workers exceed the
    # CPU count); no traceback, no "Caught DataError in DataLoader worker process".
    line = err.strip().splitlines()[-1]
    assert line == line_without_workers and line.startswith(f"error: {image}: "), err
    assert "Traceback" not in err and "Caught" not in err and err.count("error:") == 1, err
    log = (work_dir / "train.log").read_text()
    assert log.splitlines()[-1].endswith(line)
    assert exited - (work_dir / "train.log").stat().st_mtime < EXIT_AFTER_ERROR_S
    assert checkpoint.load(work_dir / "latest.pth")["iter"] == 3  # the batch before the bad one


def test_a_data_error_from_a_worker_reads_as_the_original_line():
    wrapped = (
        "Caught DataError in DataLoader worker process 3.\nOriginal Traceback (most recent "
        'call last):\n  File "x.py", line 1, in f\n    raise DataError(\n'
        "segls.data.readers.DataError: /data/m.png: mask values [511] are bad; fix the mask\n"
    )
    assert str(DataError(wrapped)) == "/data/m.png: mask values [511] are bad; fix the mask"
    assert str(DataError("Caught nothing: a plain message")) == "Caught nothing: a plain message"


ABANDONED_LOADER = """
import sys
import torch
from torch.utils.data import DataLoader, Dataset
from segls.data import loaders

class Bad(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        if index >= 2:
            raise loaders.DataError(f"item {index} is bad")
        return torch.zeros(1)

loader = DataLoader(Bad(), batch_size=1, num_workers=2, persistent_workers=True,
                    worker_init_fn=loaders.init_worker)
loaders._watch(loader)  # as build_dataloader does
try:
    list(loader)
except loaders.DataError as error:
    print(error, flush=True)
sys.exit(1)  # the loader and its workers are still up: the exit handler must stop them
"""


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_a_loader_left_up_at_exit_does_not_keep_the_process_alive(tmp_path):
    tag = uuid.uuid4().hex
    env = {**os.environ, "SEGLS_TEST_TAG": tag, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", ABANDONED_LOADER], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        out, _ = process.communicate(timeout=EXIT_WAIT_S)
    except subprocess.TimeoutExpired:
        for pid in tagged_processes(tag):
            os.kill(pid, signal.SIGKILL)
        process.communicate()
        pytest.fail("the process hung at exit on its loader's workers")
    assert process.returncode == 1 and out.strip() == "item 2 is bad"
    assert tagged_processes(tag) == []
