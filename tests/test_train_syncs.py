"""Host syncs per training iteration: at most one read, and one collective with several ranks.

On the CPU nothing waits for a device, so the count is of the calls that would wait on CUDA
(`segls.bench.syncs.SyncCounter`'s spy: tensor reads and torch.distributed collectives). An
ordinary iteration (no log line, evaluation or checkpoint) of the default recipe's shape
(EMA, Lovász term, label check on) must read once: the flag that says whether to skip the
step and whether any rank was asked to stop. The spy itself is checked first, on calls whose
count is known.
"""

from __future__ import annotations

import torch
from helpers import tiny_config
from torch.optim.optimizer import _get_value

from segls.bench import syncs

SCHEDULE = {"max_iters": 6, "log_interval": 3, "eval_interval": 6, "checkpoint_interval": 6}


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
