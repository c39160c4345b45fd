"""Host syncs per training iteration: at most one read, and one collective with several ranks.

On the CPU nothing waits for a device, so the count is of the calls that would wait on CUDA
(`benchmarks.syncs.SyncCounter`'s spy: tensor reads and torch.distributed collectives). An
ordinary iteration (no log line, evaluation or checkpoint) of the default recipe's shape
(EMA, Lovász term, label check on) must read once: the flag that says whether to skip the
step and whether any rank was asked to stop. The spy itself is checked first, on calls whose
count is known.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers import run_ranks, tiny_config, write_dataset
from torch.optim.optimizer import _get_value

from benchmarks import syncs
from segls import runtime
from segls.predict import build_criterion
from segls.train import build_objective
from segls.train.optim import build_ema, update_ema

SCHEDULE = {"max_iters": 6, "log_interval": 3, "eval_interval": 6, "checkpoint_interval": 6}
PLAIN = [1, 2, 4, 5]  # no log line, evaluation or checkpoint


def recipe_config(root, amp: str = "off", **optimizer):
    """The tiny config on the dataset at `root`, shaped like the default recipe: EMA, Lovász
    term, label check on."""
    return tiny_config(
        root,
        schedule=SCHEDULE,
        optimizer={"ema_decay": 0.9, **optimizer},
        loss={"lovasz_weight": 1.0, "check_labels": True},
        runtime={"amp": amp, "vis_samples": 0},
    )


def test_the_spy_counts_reads_and_collectives_and_exempts_host_side_calls():
    tensor = torch.tensor([1.5, 2.0])
    with syncs.SyncCounter(cuda=False) as counter:
        counter.mark(1)
        tensor.sum().item()
        bool(tensor[0] > 1)
        tensor.tolist()
        float(tensor[1])
        counter.mark(2)
        _get_value(torch.tensor(3.0))  # how an optimizer reads its host-side step count
    assert [event.kind for event in counter.counted(1)] == [
        "Tensor.item", "Tensor.bool", "Tensor.tolist", "Tensor.float",
    ]  # fmt: skip
    assert all("test_train_syncs.py" in event.site for event in counter.counted(1))
    assert counter.counted(2) == []
    assert [event.host_side for event in counter.events if event.iteration == 2] == [
        "torch keeps optimizer step counts on the host"
    ]
    assert tensor.sum().item() == 3.5  # the patches are gone
    assert "item" not in torch.Tensor.__dict__ and "__bool__" not in torch.Tensor.__dict__


def test_iteration_kinds_follow_the_intervals(tmp_path):
    kinds = syncs.iteration_kinds(recipe_config(tmp_path))
    assert kinds == {
        1: "plain",
        2: "plain",
        3: "log",
        4: "plain",
        5: "plain",
        6: "log+eval+save+last",
    }


def _assert_one_read_per_plain_iteration(counted: dict, collectives: int = 0) -> None:
    for iteration in PLAIN:
        assert counted["per_iteration"][iteration] == {"reads": 1, "collectives": collectives}, (
            iteration, counted["sites"],
        )  # fmt: skip
    where = {site.split(":")[0] + " " + site.split(" ")[1] for site in counted["sites"]}
    expected = {"segls/train/faults.py agree"}
    expected |= {"segls/runtime/distributed.py all_reduce_max"} if collectives else set()
    assert where == expected, counted["sites"]


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_an_iteration_reads_once(tmp_path, amp):
    counted = syncs.count_train_syncs(
        recipe_config(write_dataset(tmp_path / "data"), amp), tmp_path / "run"
    )
    _assert_one_read_per_plain_iteration(counted)
    assert counted["host_side"]  # the spy saw the optimizer's and the EMA's host-side counts


def test_an_iteration_with_float16_scaling_and_clipping_reads_once(tmp_path, monkeypatch):
    # CPU autocast runs float16; the config refuses it on the CPU, so the dtype is forced here.
    monkeypatch.setattr(
        runtime, "amp_dtype", lambda amp, device: torch.float16 if amp == "fp16" else None
    )
    cfg = recipe_config(write_dataset(tmp_path / "data"), "fp16", grad_clip=1.0)
    counted = syncs.count_train_syncs(cfg, tmp_path / "run")
    _assert_one_read_per_plain_iteration(counted)


def count_in_rank(root: str, work_dir: str) -> dict:
    """`count_train_syncs` of the recipe config in one rank of a torchrun-style group."""
    counted = syncs.count_train_syncs(recipe_config(root), work_dir)
    return {key: counted[key] for key in ("per_iteration", "sites")}


def test_with_two_ranks_an_iteration_makes_one_collective_and_one_read(tmp_path):
    root = write_dataset(tmp_path / "data")
    results = run_ranks(count_in_rank, (str(root), str(tmp_path / "run")), 2, tmp_path / "ranks")
    for counted in results:
        _assert_one_read_per_plain_iteration(counted, collectives=1)


def test_training_leaves_the_label_check_to_the_loader_and_evaluation_keeps_it(tmp_path):
    cfg = recipe_config(tmp_path)
    criterion = build_criterion(cfg)
    objective = build_objective(cfg, criterion)
    assert criterion.check_labels is True
    assert objective.base.check_labels is False and objective.base is not criterion


def test_update_ema_is_torchs_update_bit_for_bit():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4))
    by_torch, by_segls = build_ema(model, 0.9), build_ema(model, 0.9)
    for _ in range(4):
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param))
        model(torch.randn(2, 2, 5, 5))  # moves the BatchNorm statistics and their count
        by_torch.update_parameters(model)
        update_ema(by_segls, model)
    expected = by_torch.state_dict()
    assert expected["n_averaged"] == 4
    for key, value in by_segls.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_on_cuda_each_sync_warning_of_torchs_debug_mode_is_one_event(monkeypatch):
    # Without a GPU torch issues no such warnings, so they are issued here as torch words them.
    modes = []
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    with warnings.catch_warnings(record=True) as others:
        warnings.simplefilter("always")
        with syncs.SyncCounter(cuda=True) as counter:
            counter.mark(3)
            for _ in range(2):
                warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
            warnings.warn("something else", UserWarning, stacklevel=1)
    assert modes == ["warn", 0]
    assert [(event.kind, event.iteration) for event in counter.counted()] == [("cuda sync", 3)] * 2
    assert "test_train_syncs.py" in counter.events[0].site
    assert [str(w.message) for w in others] == ["something else"]
