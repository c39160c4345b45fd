"""Tests of segls.train: build_run, the loop, steps, learning rate, records, resume, the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import (
    AUGMENTING,
    CLASS_NAMES,
    REPO_ROOT,
    read_events,
    read_metrics,
    tiny_config,
    write_dataset,
)
from torch import nn
from torch.utils.data import DataLoader

from segls import config
from segls.cli import train as train_cli
from segls.config import ScheduleConfig
from segls.data import build_dataset, sample
from segls.losses import LabelSmoothSoftmaxCE
from segls.models import build_model
from segls.predict import build_criterion, evaluate
from segls.train import checkpoint, loop, train
from segls.train.optim import (
    build_ema,
    build_optimizer,
    learning_rate,
    poly_warmup_factor,
    set_lr,
)


@pytest.fixture
def dataset_root(tmp_path):
    return write_dataset(tmp_path / "data")


def test_criterion_takes_lb_pos_lb_neg_over_the_default_lb_smooth(tmp_path):
    cfg = tiny_config(tmp_path, loss={"lb_pos": 0.9, "lb_neg": 0.05})
    criterion = build_criterion(cfg)
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 255])
    target = torch.full((4, 3), 0.05).scatter_(1, torch.tensor([[0], [1], [2], [0]]), 0.9)
    per_row = -(target * torch.log_softmax(logits, 1)).sum(1)
    torch.testing.assert_close(criterion(logits, labels), per_row[:3].mean())


def test_ema_follows_the_hand_written_recurrence_and_is_what_training_evaluates(tmp_path):
    assert build_ema(nn.Linear(2, 1), None) is None
    model = nn.Linear(2, 1)
    ema = build_ema(model, 0.9)
    expected = model.weight.detach().clone()  # the first update copies the weights
    ema.update_parameters(model)
    for step in range(3):
        with torch.no_grad():
            model.weight.add_(1.0 + step)
        ema.update_parameters(model)
        expected = 0.9 * expected + 0.1 * model.weight.detach()
    torch.testing.assert_close(ema.module.weight, expected)

    root = write_dataset(tmp_path / "data")
    cfg = tiny_config(
        root, optimizer={"ema_decay": 0.9}, runtime={"device": "cpu", "vis_samples": 0}
    )
    scores = train(cfg, tmp_path / "run")
    state = checkpoint.load(tmp_path / "run" / "latest.pth")
    averaged = build_model(cfg.model, cfg.data.in_channels, cfg.data.num_classes).eval()
    averaged.load_state_dict(
        {k[len("module.") :]: v for k, v in state["ema"].items() if k.startswith("module.")}
    )
    loader = DataLoader(build_dataset(cfg.data, "val", train=False), batch_size=1)
    again = evaluate(averaged, loader, 3, 255, torch.device("cpu"), None)
    assert again["mIoU"] == pytest.approx(scores["mIoU"], nan_ok=True)
    assert any(not torch.equal(v, state["model"][k]) for k, v in averaged.state_dict().items())


# ---- schedule and optimizer -------------------------------------------------------------


def test_poly_warmup_factor_matches_hand_computed_values():
    sched = ScheduleConfig(max_iters=10, warmup_iters=0, power=1.0, min_lr=0.0)
    assert [poly_warmup_factor(i, sched, 1.0) for i in (0, 5, 10)] == [1.0, 0.5, 0.0]
    sched = ScheduleConfig(max_iters=10, warmup_iters=0, power=2.0, min_lr=0.1)
    # lr = (1 - 0.1) * (1 - 4/10)^2 + 0.1 = 0.9 * 0.36 + 0.1 = 0.424 for base_lr 1.
    assert poly_warmup_factor(4, sched, 1.0) == pytest.approx(0.424)
    assert poly_warmup_factor(10, sched, 1.0) == pytest.approx(0.1)
    sched = ScheduleConfig(max_iters=100, warmup_iters=4, warmup_ratio=0.2, power=1.0)
    # warm-up at step 2 of 4: 0.2 + 0.8 * 2/4 = 0.6, times poly 1 - 2/100 = 0.98.
    assert poly_warmup_factor(2, sched, 1.0) == pytest.approx(0.6 * 0.98)
    assert poly_warmup_factor(4, sched, 1.0) == pytest.approx(0.96)


def test_cooldown_ramps_the_last_iterations_linearly_to_zero():
    # Warm-up 2 of 10 from 0.5, constant (power 0), cool-down over the last 4 steps:
    # factors 0.5, 0.75, then 1 up to step 6, then (10 - i) / 4 = 0.75, 0.5, 0.25, 0.
    sched = ScheduleConfig(max_iters=10, warmup_iters=2, warmup_ratio=0.5, power=0.0)
    sched.cooldown_iters = 4
    factors = [poly_warmup_factor(i, sched, 1.0) for i in range(11)]
    assert factors == pytest.approx([0.5, 0.75, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25, 0.0])
    # With poly decay the two multiply: step 8 of 10, power 1 -> 0.2 * 2/4 = 0.1.
    sched.power = 1.0
    assert poly_warmup_factor(8, sched, 1.0) == pytest.approx(0.1)


@pytest.mark.parametrize("cooldown", [-1, 9])
def test_cooldown_longer_than_the_run_after_warmup_is_a_config_error(cooldown):
    cfg = config.Config()
    cfg.schedule = ScheduleConfig(max_iters=10, warmup_iters=2, cooldown_iters=cooldown)
    with pytest.raises(
        config.ConfigError, match=r"schedule.cooldown_iters = -?\d+: use 0 up to .* = 8"
    ):
        config.validate(cfg)


def test_the_lr_of_every_group_is_set_per_iteration():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    opt_cfg = config.OptimizerConfig(type="sgd", lr=0.5, weight_decay=0.01)
    optimizer = build_optimizer(model, opt_cfg)
    sched = ScheduleConfig(max_iters=8, warmup_iters=2, warmup_ratio=0.5, power=1.0)
    seen = []
    for iteration in range(4):
        set_lr(optimizer, learning_rate(iteration, opt_cfg, sched))
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
    expected = [0.5 * 0.5, 0.5 * 0.75 * (1 - 1 / 8), 0.5 * (1 - 2 / 8), 0.5 * (1 - 3 / 8)]
    for lrs, lr in zip(seen, expected, strict=True):
        assert lrs == pytest.approx([lr, lr])


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_optimizer_leaves_biases_and_norm_parameters_undecayed(kind):
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.GroupNorm(2, 4), nn.Conv2d(4, 1, 1, bias=False))
    optimizer = build_optimizer(model, config.OptimizerConfig(type=kind, weight_decay=0.05))
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert {id(p) for p in no_decay["params"]} == {
        id(model[0].bias),
        id(model[1].weight),
        id(model[1].bias),
    }
    assert type(optimizer).__name__.lower() == kind


def lambda_lr_schedule(opt_cfg, sched, iterations: int) -> list[float]:
    """Learning rates of the first `iterations` steps as runs set them until 2026-11-30.

    torch's LambdaLR steps an optimizer after each iteration; its factor is written out here
    from the schedule's formula: poly decay from ``optimizer.lr`` to ``min_lr``, times a
    linear warm-up from ``warmup_ratio`` and a linear cool-down to 0.
    """
    base = opt_cfg.lr

    def factor(it: int) -> float:
        total = sched.max_iters
        floor = sched.min_lr / base if base > 0 else 0.0
        value = (1 - floor) * (1 - min(it, total) / total) ** sched.power + floor
        if it < sched.warmup_iters:
            value *= sched.warmup_ratio + (1 - sched.warmup_ratio) * (it / sched.warmup_iters)
        if sched.cooldown_iters > 0 and it > total - sched.cooldown_iters:
            value *= max(total - it, 0) / sched.cooldown_iters
        return value

    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    rates = []
    for _ in range(iterations):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def _schedule(name: str):
    """(optimizer, schedule) sections of a config file, or of a made-up schedule by name."""
    if name.endswith(".yaml"):
        cfg = config.load(REPO_ROOT / "configs" / name)
        return cfg.optimizer, cfg.schedule
    made_up = {
        "warmup+cooldown+min_lr": ScheduleConfig(
            max_iters=300, warmup_iters=40, warmup_ratio=0.05, cooldown_iters=90,
            power=1.7, min_lr=2e-5,
        ),
        "cooldown only": ScheduleConfig(max_iters=97, cooldown_iters=97, power=0.0),
    }  # fmt: skip
    return config.OptimizerConfig(lr=3.7e-4), made_up[name]


SHORT_SCHEDULES = [
    "unet_resnet18_scratch_64x64_600.yaml",  # the default run
    "_base_/schedules/adamw_const_ema_600.yaml",
    "_base_/schedules/adamw_poly_1k.yaml",
    "warmup+cooldown+min_lr",
    "cooldown only",
]
LONG_SCHEDULES = [
    f"_base_/schedules/{name}.yaml"
    for name in ("sgd_poly_20k", "sgd_poly_40k", "sgd_poly_80k", "adamw_poly_160k")
]


@pytest.mark.filterwarnings("ignore::UserWarning")  # LambdaLR's step-order warning
@pytest.mark.parametrize(
    "name", SHORT_SCHEDULES + [pytest.param(n, marks=pytest.mark.slow) for n in LONG_SCHEDULES]
)
def test_learning_rate_is_bit_identical_to_lambda_lr_at_every_iteration(name):
    opt_cfg, sched = _schedule(name)
    expected = lambda_lr_schedule(opt_cfg, sched, sched.max_iters + 1)
    rates = [learning_rate(i, opt_cfg, sched) for i in range(sched.max_iters + 1)]
    mismatches = [i for i, (a, b) in enumerate(zip(rates, expected, strict=True)) if a != b]
    assert mismatches == []
    assert len(set(rates)) > 2 or sched.power == 0  # the schedule does move


# ---- one training step --------------------------------------------------------------------


def test_fp16_overflow_skips_the_step_and_lowers_the_scale():
    torch.manual_seed(0)
    model = nn.Conv2d(2, 3, 1)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    criterion = LabelSmoothSoftmaxCE(0.1)
    images, labels = torch.randn(2, 2, 4, 4), torch.randint(0, 3, (2, 4, 4))
    # A scale of 2**100 turns every float16 gradient into inf, so the scaler must skip.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100)
    step = loop.train_one_iter(model, criterion, images, labels, optimizer, scaler, torch.float16)
    assert step.skipped is True
    assert scaler.get_scale() == 2.0**99
    for param, old in zip(model.parameters(), before, strict=True):
        assert torch.equal(param, old)

    scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    step = loop.train_one_iter(model, criterion, images, labels, optimizer, scaler, torch.float16)
    assert step.skipped is False
    assert not torch.equal(model.weight, before[0])


def test_grad_clip_bounds_the_gradient_norm():
    torch.manual_seed(0)
    model = nn.Conv2d(2, 3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    criterion = LabelSmoothSoftmaxCE(0.0)
    images, labels = 50 * torch.randn(2, 2, 4, 4), torch.randint(0, 3, (2, 4, 4))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    step = loop.train_one_iter(model, criterion, images, labels, optimizer, scaler, None, 0.01)
    clipped_norm = torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in model.parameters()])
    )
    assert step.grad_norm > 0.01
    assert clipped_norm == pytest.approx(0.01, rel=1e-4)


# ---- evaluation -------------------------------------------------------------------------


class OracleModel(nn.Module):
    """Logits that are the one-hot of a fixed label map (the input's channel 0 holds it)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.encoder = nn.Module()
        self.encoder.output_stride = 8
        self.scale = nn.Parameter(torch.tensor(4.0))

    def forward(self, images):
        assert images.shape[-1] % 8 == 0 and images.shape[-2] % 8 == 0
        classes = images[:, 0].round().long().clamp(0, self.num_classes - 1)
        return self.scale * F.one_hot(classes, self.num_classes).permute(0, 3, 1, 2).float()


def test_evaluate_scores_and_loss_against_torch_cross_entropy():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (3, 13, 21), generator=generator)
    labels[:, :2] = 255
    predictions = labels.clamp(max=2).clone()
    predictions[0, 5:9] = 1  # some mistakes
    images = torch.stack([predictions.float(), torch.zeros_like(predictions.float())], dim=1)
    loader = DataLoader(list(zip(images, labels, strict=True)), batch_size=2)
    model = OracleModel(3)
    criterion = LabelSmoothSoftmaxCE(0.1, ignore_index=255)
    scores = evaluate(model, loader, 3, 255, torch.device("cpu"), None, criterion)

    valid = labels != 255
    cm = np.zeros((3, 3), np.int64)
    np.add.at(cm, (labels[valid].numpy(), predictions[valid].numpy()), 1)
    iou = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
    assert scores["mIoU"] == pytest.approx(iou.mean())
    assert scores["aAcc"] == pytest.approx(np.trace(cm) / cm.sum())
    logits = 4.0 * F.one_hot(predictions, 3).permute(0, 3, 1, 2).float()
    expected = F.cross_entropy(logits, labels, ignore_index=255, label_smoothing=0.1)
    assert scores["loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert not model.training
    # Calibration, by hand: every pixel's top probability is e^4 / (e^4 + 2), so all pixels
    # share one bin and ECE = |accuracy - that confidence|; NLL is -ln of it when right and
    # -ln(1 / (e^4 + 2)) when wrong.
    confidence = math.exp(4) / (math.exp(4) + 2)
    accuracy = np.trace(cm) / cm.sum()
    assert scores["ECE"] == pytest.approx(abs(accuracy - confidence), rel=1e-5)
    nll = accuracy * -math.log(confidence) + (1 - accuracy) * math.log(math.exp(4) + 2)
    assert scores["NLL"] == pytest.approx(nll, rel=1e-5)
    assert sum(scores["calibration"]["count"]) == cm.sum()


def test_evaluate_without_criterion_reports_nan_loss_and_accepts_bf16():
    labels = torch.randint(0, 2, (1, 8, 8))
    loader = DataLoader([(labels[0, None].float(), labels[0])], batch_size=1)
    scores = evaluate(OracleModel(2), loader, 2, 255, torch.device("cpu"), torch.bfloat16)
    assert math.isnan(scores["loss"])
    assert scores["mIoU"] == pytest.approx(1.0)


# ---- whole runs ---------------------------------------------------------------------------


def test_train_writes_records_and_checkpoints_then_resumes(dataset_root, tmp_path, capsys):
    cfg = tiny_config(dataset_root, eval={"calibration_bins": 5})
    work_dir = tmp_path / "run"
    scores = train(cfg, work_dir)
    assert {"aAcc", "mIoU", "mAcc", "mDice", "IoU", "loss"} <= scores.keys()
    assert config.load(work_dir / "config.yaml") == cfg

    rows = read_metrics(work_dir)
    assert [row["iter"] for row in rows] == [2, 4]
    assert rows[-1]["mIoU"] == pytest.approx(scores["mIoU"])
    assert rows[-1]["class_names"] == CLASS_NAMES
    assert {"loss", "aAcc", "mIoU", "mAcc", "mDice", "IoU", "Acc", "Dice"} <= rows[0].keys()
    assert {"ECE", "NLL", "Brier", "calibration"} <= rows[0].keys()
    assert len(rows[0]["calibration"]["count"]) == 5  # eval.calibration_bins

    latest = checkpoint.load(work_dir / "latest.pth")
    best = checkpoint.load(work_dir / "best.pth")
    assert latest["iter"] == 4
    assert best["best_miou"] == pytest.approx(max(row["mIoU"] for row in rows))
    assert best["iter"] == max(rows, key=lambda row: row["mIoU"])["iter"]
    assert latest["config"] == config.to_dict(cfg)

    events = read_events(work_dir)
    scalar_tags = set(events.Tags()["scalars"])
    expected_tags = {"train/loss", "train/lr", "train/images_per_s", "val/loss", "val/mIoU"}
    expected_tags |= {"val/mAcc", "val/aAcc", "val/mDice", "val/ECE", "val/NLL", "val/Brier"}
    assert expected_tags <= scalar_tags
    assert any(tag.startswith("val/IoU/") for tag in scalar_tags)
    assert {f"val/IoU/{name}" for name in CLASS_NAMES} >= {
        tag for tag in scalar_tags if tag.startswith("val/IoU/")
    }
    assert {"val/sample_0", "val/sample_1", "val/reliability"} <= set(events.Tags()["images"])
    image = events.Images("val/sample_0")[-1]
    assert min(image.height, image.width) >= 2 * 32  # a 2×2 grid: tests/test_train_logger.py
    assert [event.step for event in events.Scalars("train/loss")] == [1, 2, 3, 4]
    lrs = [event.value for event in events.Scalars("train/lr")]
    assert lrs[0] == pytest.approx(0.01 * 0.1)  # warm-up starts at warmup_ratio * lr

    log = (work_dir / "train.log").read_text()
    assert "iter 4/4" in log and "mIoU" in log and "ring" in log
    assert "best mIoU" in capsys.readouterr().out

    longer = tiny_config(dataset_root, eval={"calibration_bins": 5}, schedule={"max_iters": 6})
    train(longer, work_dir, resume=True)
    assert "resumed from" in (work_dir / "train.log").read_text()
    assert checkpoint.load(work_dir / "latest.pth")["iter"] == 6
    assert [row["iter"] for row in read_metrics(work_dir)] == [2, 4, 6]
    events = read_events(work_dir)
    assert [event.step for event in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [event.step for event in events.Scalars("val/mIoU")] == [2, 4, 6]
    # The resumed run follows its own schedule (max_iters 6): lr = 0.01 * (1 - 4/6) ** 0.9.
    lr_at_5 = [event.value for event in events.Scalars("train/lr")][4]
    assert lr_at_5 == pytest.approx(0.01 * (1 - 4 / 6) ** 0.9, rel=1e-6)


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("ema_decay", [None, 0.5])
def test_resume_continues_exactly_as_an_uninterrupted_run(
    dataset_root, tmp_path, monkeypatch, ema_decay
):
    cfg = tiny_config(
        dataset_root,
        data=AUGMENTING,
        schedule={"max_iters": 6, "eval_interval": 3, "checkpoint_interval": 3},
        runtime={"deterministic": True, "vis_samples": 0},
        optimizer={"ema_decay": ema_decay},
    )
    train(cfg, tmp_path / "straight")

    calls = []
    real_step = loop.train_one_iter

    def step_then_crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # iteration 4: after the checkpoint at 3, mid-epoch (2 per epoch)
            raise Interrupted
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_one_iter", step_then_crash)
    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "resumed")
    monkeypatch.setattr(loop, "train_one_iter", real_step)
    halfway = checkpoint.load(tmp_path / "resumed" / "latest.pth")
    assert halfway["iter"] == 3
    train(cfg, tmp_path / "resumed", resume=True)

    straight = checkpoint.load(tmp_path / "straight" / "latest.pth")
    resumed = checkpoint.load(tmp_path / "resumed" / "latest.pth")
    assert straight["iter"] == resumed["iter"] == 6
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert ("ema" in straight) == (ema_decay is not None)
    for name, tensor in straight.get("ema", {}).items():
        assert torch.equal(tensor, resumed["ema"][name]), name
    assert read_metrics(tmp_path / "straight") == read_metrics(tmp_path / "resumed")
    # The second half did change the weights, so equality above is not trivially true.
    changed = [
        name for name, t in halfway["model"].items() if not torch.equal(t, resumed["model"][name])
    ]
    assert changed


def test_resume_without_a_checkpoint_names_the_missing_file(dataset_root, tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="latest.pth"):
        train(tiny_config(dataset_root), tmp_path / "empty", resume=True)


def test_resume_from_a_corrupt_checkpoint_names_it_and_keeps_the_records(dataset_root, tmp_path):
    work_dir = tmp_path / "run"
    work_dir.mkdir()
    (work_dir / "latest.pth").write_bytes(b"PK\x03\x04 half a zip")
    (work_dir / "metrics.jsonl").write_text('{"iter": 2, "mIoU": 0.5}\n')
    with pytest.raises(checkpoint.CheckpointError, match="latest.pth.*corrupt"):
        train(tiny_config(dataset_root), work_dir, resume=True)
    assert (work_dir / "metrics.jsonl").read_text() == '{"iter": 2, "mIoU": 0.5}\n'


def test_fp16_on_cpu_is_refused_with_advice(dataset_root, tmp_path):
    cfg = tiny_config(dataset_root, runtime={"amp": "fp16"})
    with pytest.raises(config.ConfigError, match="bf16"):
        train(cfg, tmp_path / "run")


# ---- the command line ------------------------------------------------------------------


def test_cli_trains_with_overrides_into_the_default_work_dir(dataset_root, tmp_path, monkeypatch):
    config_path = tmp_path / "tiny_unet.yaml"
    config.dump(tiny_config(dataset_root), config_path)
    monkeypatch.chdir(tmp_path)
    scores = train_cli.main([str(config_path), "schedule.max_iters=2", "runtime.vis_samples=0"])
    work_dir = tmp_path / "work_dirs" / "tiny_unet"
    assert checkpoint.load(work_dir / "latest.pth")["iter"] == 2
    assert config.load(work_dir / "config.yaml").schedule.max_iters == 2
    assert scores["mIoU"] == pytest.approx(read_metrics(work_dir)[-1]["mIoU"])

    train_cli.main([str(config_path), "--resume", "schedule.max_iters=3", "runtime.vis_samples=0"])
    assert checkpoint.load(work_dir / "latest.pth")["iter"] == 3

    # The saved config keeps the experiment's name, so a run started from it stays in its dir.
    assert config.load(work_dir / "config.yaml").name == "tiny_unet"
    saved = str(work_dir / "config.yaml")
    train_cli.main([saved, "--resume", "schedule.max_iters=4", "runtime.vis_samples=0"])
    assert checkpoint.load(work_dir / "latest.pth")["iter"] == 4
    assert sorted(path.name for path in (tmp_path / "work_dirs").iterdir()) == ["tiny_unet"]


def test_cli_resume_argument_forms(tmp_path):
    args = train_cli.parse_args(["c.yaml", "--resume"])
    assert args.resume is True and args.overrides == []
    checkpoint_path = tmp_path / "x.pth"
    args = train_cli.parse_args(["c.yaml", "a.b=1", "--resume", str(checkpoint_path)])
    assert args.resume == str(checkpoint_path) and args.overrides == ["a.b=1"]
    args = train_cli.parse_args(["c.yaml", "--resume", "a.b=1", "c.d=2"])
    assert args.resume is True and args.overrides == ["a.b=1", "c.d=2"]


def test_bf16_channels_last_sgd_with_clipping_trains(dataset_root, tmp_path):
    cfg = tiny_config(
        dataset_root,
        optimizer={"type": "sgd", "grad_clip": 1.0},
        schedule={"max_iters": 2},
        runtime={"amp": "bf16", "channels_last": True, "vis_samples": 1},
    )
    scores = train(cfg, tmp_path / "run")
    assert 0.0 <= scores["mIoU"] <= 1.0 and math.isfinite(scores["loss"])
    events = read_events(tmp_path / "run")
    assert "train/grad_norm" in events.Tags()["scalars"]
    assert "train/grad_scale" not in events.Tags()["scalars"]  # no scaler without fp16


def test_the_bundled_sample_is_prepared_on_first_use(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prepared = []

    def fake_ensure_sample(root):
        prepared.append(Path(root))
        return write_dataset(Path(root))

    monkeypatch.setattr(sample, "ensure_sample", fake_ensure_sample)
    cfg = tiny_config(Path("data/scratch_assay"), schedule={"max_iters": 1})
    train(cfg, tmp_path / "run")
    assert prepared == [Path("data/scratch_assay")]
    assert "preparing the bundled sample" in (tmp_path / "run" / "train.log").read_text()


def test_classes_that_no_training_label_uses_in_the_first_epoch_are_warned_of(
    dataset_root, tmp_path
):
    schedule = {"max_iters": 3, "eval_interval": 3, "checkpoint_interval": 3}
    five = tiny_config(dataset_root, data={"num_classes": 5, "class_names": []}, schedule=schedule)
    train(five, tmp_path / "five")
    log = (tmp_path / "five" / "train.log").read_text()
    assert log.count("warning:") == 1
    assert (
        "warning: the model has data.num_classes=5 classes, but no training label of the first "
        "2 batches is class 3 (class_3), 4 (class_4); check data.num_classes" in log
    )  # 4 images in batches of 2: the first epoch is 2 batches
    assert log.index("warning:") > log.index("iter 3/3")  # read at the evaluation, not at iter 2
    train(tiny_config(dataset_root, schedule=schedule), tmp_path / "three")
    assert "warning:" not in (tmp_path / "three" / "train.log").read_text()
