"""Tests of multi-process training and evaluation: gloo on the CPU, 2 processes.

The processes are real (each its own interpreter state, talking over TCP through gloo):
one test launches the training command line with torchrun itself; the others fork ranks
from the forkserver of tests/helpers.py, which has imported segls once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    TIMEOUT_S,
    finish,
    output_of,
    run_ranks,
    save_checkpoint,
    start,
    tiny_config,
    write_dataset,
)
from PIL import Image
from torch.utils.data import DistributedSampler

from segls import config, io, runtime
from segls.cli import test as test_cli
from segls.cli import train as train_cli
from segls.data import InfiniteLoader, ShardSampler, augmentation_seed, build_loaders
from segls.models import build_model
from segls.predict import build_criterion, evaluate
from segls.runtime import distributed
from segls.train import checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]

# ---- the samplers -------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "world"), [(5, 2), (7, 3), (2, 4), (0, 2), (6, 1)])
def test_shard_sampler_deals_every_index_to_exactly_one_rank(length, world):
    shards = [list(ShardSampler(length, rank, world)) for rank in range(world)]
    assert sorted(index for shard in shards for index in shard) == list(range(length))
    assert [len(ShardSampler(length, rank, world)) for rank in range(world)] == [
        len(shard) for shard in shards
    ]
    assert shards[0] == list(range(0, length, world))  # r, r + W, r + 2W, ...


def test_torch_distributed_sampler_pads_which_is_why_evaluation_does_not_use_it():
    # The contrast that motivates ShardSampler: 5 items on 2 ranks come out as 6.
    padded = [list(DistributedSampler(range(5), 2, rank, shuffle=False)) for rank in range(2)]
    assert sum(len(shard) for shard in padded) == 6
    with pytest.raises(ValueError, match="rank 2 is not in"):
        ShardSampler(5, 2, 2)


def test_rank_zero_keeps_the_single_process_seeds_and_other_ranks_differ():
    assert augmentation_seed(7, 0) == 7
    assert augmentation_seed(7, 0, epoch=3) == runtime.derived_seed(7, 3)
    seeds = {augmentation_seed(7, rank, epoch) for rank in range(4) for epoch in range(5)}
    seeds |= {augmentation_seed(7, rank) for rank in range(1, 4)}
    assert len(seeds) == 4 * 5 + 3  # all different


def test_training_ranks_get_disjoint_parts_of_each_epoch(tmp_path):
    cfg = tiny_config(write_dataset(tmp_path / "data", num_train=8, num_val=1))
    loaders = [build_loaders(cfg, rank, 2) for rank in range(2)]
    assert [list(val.sampler) for _, val in loaders] == [[0], []]  # 1 image: rank 1 gets none
    for epoch in range(3):
        parts = []
        for rank, (train_loader, _) in enumerate(loaders):
            next(InfiniteLoader(train_loader, cfg.runtime.seed, start_iter=2 * epoch, rank=rank))
            parts.append(list(train_loader.sampler))  # the order of `epoch`, set above
        assert sorted(parts[0] + parts[1]) == list(range(8)), epoch


def test_without_torchrun_there_is_one_process_and_nothing_is_initialised(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    context = distributed.setup(torch.device("cpu"))
    assert (context.rank, context.world_size, context.is_main) == (0, 1, True)
    assert not torch.distributed.is_initialized()
    assert distributed.all_reduce_sum([1.5, 2.0]) == [1.5, 2.0]
    model = torch.nn.BatchNorm2d(2)
    assert distributed.wrap_ddp(model, context) is model
    assert distributed.convert_sync_bn(model, True, context) is model


def test_a_partial_torchrun_environment_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="WORLD_SIZE=2 is set but RANK, LOCAL_RANK"):
        distributed.setup(torch.device("cpu"))


# ---- sharded evaluation -------------------------------------------------------------------


def evaluate_checkpoint(config_path: str, weights_path: str) -> dict:
    """Evaluate the weights on this process's validation shard (all of it in one process)."""
    torch.set_num_threads(1)
    cfg = config.load(config_path)
    context = distributed.setup(torch.device("cpu"))
    try:
        _, val_loader = build_loaders(cfg, context.rank, context.world_size)
        model = build_model(cfg.model, cfg.data.in_channels, cfg.data.num_classes)
        model.load_state_dict(checkpoint.load(weights_path))
        scores = evaluate(
            model, val_loader, 3, 255, torch.device("cpu"), None, build_criterion(cfg)
        )
        return {"scores": scores, "indices": list(val_loader.sampler)}
    finally:
        distributed.cleanup(context)


def test_two_process_evaluation_of_an_odd_set_equals_one_process_exactly(tmp_path):
    root = write_dataset(tmp_path / "data", num_train=4, num_val=5)
    cfg = tiny_config(root, data={"val_batch_size": 1})
    config_path = tmp_path / "tiny.yaml"
    config.dump(cfg, config_path)
    torch.manual_seed(3)
    model = build_model(cfg.model, cfg.data.in_channels, cfg.data.num_classes)
    weights_path = tmp_path / "weights.pth"
    io.write_torch(weights_path, model.state_dict())

    ranks = run_ranks(evaluate_checkpoint, (str(config_path), str(weights_path)), 2, tmp_path)
    single = evaluate_checkpoint(str(config_path), str(weights_path))

    assert [rank["indices"] for rank in ranks] == [[0, 2, 4], [1, 3]]  # each image once
    assert single["indices"] == [0, 1, 2, 3, 4]
    expected, scores = single["scores"], ranks[0]["scores"]
    same = [json.dumps(rank["scores"], sort_keys=True) for rank in ranks]  # NaN-safe equality
    assert same[0] == same[1]  # every rank returns the whole set's scores
    # Pixel counts (confusion matrix, calibration bins) are sums of integers: exact.
    for key in ("aAcc", "mIoU", "mAcc", "mDice", "IoU", "Acc", "Dice"):
        assert scores[key] == expected[key], key
    assert scores["calibration"]["count"] == expected["calibration"]["count"]
    # Independent count: every valid pixel of the 5 masks on disk, counted once.
    masks = [np.array(Image.open(path)) for path in sorted((root / "masks" / "val").iterdir())]
    valid_pixels = sum(int((mask != 255).sum()) for mask in masks)
    assert sum(scores["calibration"]["count"]) == valid_pixels
    # Float sums added in another order (per rank, then across ranks): equal to rounding.
    for key in ("loss", "ECE", "NLL", "Brier"):
        assert scores[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-15), key


def tools_test_in_process(argv: list[str]) -> dict:
    """tools/test.py in this process; also the images this process's evaluation predicted."""
    torch.set_num_threads(1)
    import segls.predict  # tools/test.py imports `evaluate` from here when it runs

    seen, real_evaluate = [], segls.predict.evaluate

    def spy(model, loader, *args, **kwargs):
        seen.append(list(loader.sampler))
        return real_evaluate(model, loader, *args, **kwargs)

    segls.predict.evaluate = spy
    try:
        return {"scores": test_cli.main(argv), "indices": seen[0]}
    finally:
        segls.predict.evaluate = real_evaluate


def test_tools_test_under_torchrun_shards_the_set_as_training_does(tmp_path):
    root = write_dataset(tmp_path / "data", num_train=4, num_val=5)
    cfg = tiny_config(root, data={"val_batch_size": 1})
    config_path = tmp_path / "tiny.yaml"
    config.dump(cfg, config_path)
    save_checkpoint(cfg, tmp_path / "best.pth")
    argv = [str(config_path), str(tmp_path / "best.pth"), "--save-masks"]

    ranks = run_ranks(
        tools_test_in_process, ([*argv, "--out", str(tmp_path / "two")],), 2, tmp_path
    )
    single = tools_test_in_process([*argv, "--out", str(tmp_path / "one")])

    assert [rank["indices"] for rank in ranks] == [[0, 2, 4], [1, 3]]  # as ShardSampler deals
    assert single["indices"] == [0, 1, 2, 3, 4]
    expected, scores = single["scores"], ranks[0]["scores"]
    for key in ("aAcc", "mIoU", "mAcc", "mDice", "IoU", "Acc", "Dice"):
        assert scores[key] == expected[key], key
    assert scores["loss"] == pytest.approx(expected["loss"], rel=1e-12)  # summed in another order
    outputs = [(tmp_path / f"rank{rank}.log").read_text() for rank in range(2)]
    assert "wrote 5 masks" in outputs[0] and "mIoU" in outputs[0]
    assert "mIoU" not in outputs[1] and "wrote" not in outputs[1]  # only rank 0 prints
    for folder in ("one", "two"):
        assert sorted(p.name for p in (tmp_path / folder / "masks").iterdir()) == [
            f"s{index}.png" for index in range(5)
        ]
    for index in range(5):
        one, two = (tmp_path / folder / "masks" / f"s{index}.png" for folder in ("one", "two"))
        assert one.read_bytes() == two.read_bytes()


# ---- DDP training through torchrun ------------------------------------------------------------

TORCHRUN_WRAPPER = """
import os, sys
import torch
from segls.cli import train as cli
from segls.train import checkpoint, loop

seen = {}
real_step = loop.train_one_iter

def spy(model, criterion, images, labels, *args, **kwargs):
    if not seen:
        seen["model"], seen["images"] = model, images.clone()
        state = checkpoint.unwrap_model(model).state_dict()
        seen["initial"] = {name: tensor.clone() for name, tensor in state.items()}
    return real_step(model, criterion, images, labels, *args, **kwargs)

loop.train_one_iter = spy
code = cli.run(sys.argv[2:])
torch.save(
    {
        "wrapper": type(seen["model"]).__name__,
        "model": checkpoint.unwrap_model(seen["model"]).state_dict(),
        "initial": seen["initial"],
        "images": seen["images"],
    },
    os.path.join(sys.argv[1], "rank%s.pth" % os.environ["RANK"]),
)
sys.exit(code)
"""


def test_torchrun_trains_ddp_replicas_that_stay_identical_and_only_rank_0_writes(tmp_path, capsys):
    root = write_dataset(tmp_path / "data", num_train=8, num_val=3)
    augmenting = {"crop_size": [24, 24], "hflip": 0.5, "vflip": 0.5, "photometric": 0.5}
    cfg = tiny_config(root, data=augmenting, runtime={"vis_samples": 1})
    config_path = tmp_path / "tiny.yaml"
    config.dump(cfg, config_path)
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(TORCHRUN_WRAPPER)
    work_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(wrapper), str(tmp_path),
        str(config_path), "--work-dir", str(work_dir),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT_S, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    ranks = [torch.load(tmp_path / f"rank{r}.pth", weights_only=True) for r in range(2)]
    assert ranks[0]["wrapper"] == ranks[1]["wrapper"] == "DistributedDataParallel"
    # The ranks trained on different images (their own part of the epoch, own augmentation)...
    assert not torch.equal(ranks[0]["images"], ranks[1]["images"])
    # ...yet DDP averaged their gradients, so every weight is the same on both; the buffers
    # (BatchNorm statistics) too, as the final evaluation gave every rank rank 0's.
    assert ranks[0]["model"].keys() == ranks[1]["model"].keys()
    for name, tensor in ranks[0]["model"].items():
        assert torch.equal(tensor, ranks[1]["model"][name]), name
        assert torch.equal(ranks[0]["initial"][name], ranks[1]["initial"][name]), name
    changed = [
        n for n, t in ranks[0]["model"].items() if not torch.equal(t, ranks[0]["initial"][n])
    ]
    assert changed  # 4 steps did train, so the equality above is not trivially true
    latest = checkpoint.load(work_dir / "latest.pth")
    assert latest["iter"] == 4
    for name, tensor in latest["model"].items():
        assert torch.equal(tensor, ranks[0]["model"][name]), name

    # Only rank 0 wrote: one TensorBoard file, one row per evaluation, each line once.
    assert len(list(work_dir.glob("events.out.tfevents.*"))) == 1
    rows = (work_dir / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2
    log = (work_dir / "train.log").read_text()
    assert log.count("iter 3/4") == 1
    assert log.count(f"saved {work_dir / 'latest.pth'}") == 2  # iters 2 and 4
    assert "x 2 processes" in log

    # Resumed by one process: the total batch (2 x 2 processes) must stay the same.
    argv = [str(config_path), "--work-dir", str(work_dir), "--resume", "schedule.max_iters=6"]
    assert train_cli.run(argv) == 1
    assert "total batch of 4 (data.batch_size 2 x 2 processes)" in capsys.readouterr().err
    assert train_cli.run([*argv, "data.batch_size=4"]) == 0
    log = (work_dir / "train.log").read_text()
    assert "resumed on 1 process instead of 2: the total batch stays 4" in log


def launch(argv: list[str]) -> None:
    """tools/torchrun.py in this process: its status is the process's exit code."""
    from segls.cli import torchrun as torchrun_cli

    sys.exit(torchrun_cli.run(argv))


@pytest.mark.slow
def test_the_torchrun_launcher_exits_143_after_the_clean_stop_on_sigterm(tmp_path):
    root = write_dataset(tmp_path / "data", num_train=4, num_val=2)
    schedule = {"max_iters": 100000, "checkpoint_interval": 100000, "log_interval": 1}
    cfg = tiny_config(root, schedule=schedule, runtime={"vis_samples": 0})
    config_path = tmp_path / "tiny.yaml"
    config.dump(cfg, config_path)
    work_dir = tmp_path / "run"
    train_script = str(REPO_ROOT / "tools" / "train.py")
    argv = ["--standalone", "--nproc_per_node=2", train_script, str(config_path)]
    paths = [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(paths)}
    launcher = start(launch, ([*argv, "--work-dir", str(work_dir)],), tmp_path, "torchrun", env)
    deadline = time.monotonic() + TIMEOUT_S
    log = work_dir / "train.log"
    while not (log.exists() and "iter 3/" in log.read_text()):
        assert launcher.is_alive(), output_of(launcher)[-3000:]
        assert time.monotonic() < deadline, "training did not reach iteration 3"
        time.sleep(0.05)
    os.kill(launcher.pid, signal.SIGTERM)  # as a job scheduler stops the launcher
    finish(launcher, expect_exit=143)
    output = output_of(launcher)
    assert "Traceback" not in output and "SignalException" not in output
    assert "torchrun stopped by SIGTERM" in output
    stopped_at = checkpoint.load(work_dir / "latest.pth")["iter"]
    for rank in range(2):
        assert f"[rank {rank}] stopped by SIGTERM after iter {stopped_at}: saved" in output
