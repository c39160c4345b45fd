"""Rules for ``model.*``, ``schedule.*``, ``loss.*``, ``optimizer.*`` and ``runtime.*``.

The model and the schedule follow the time budget and the measured speed of this machine
(`segls.plan.timing`); the loss and optimizer settings are the recipe the project's studies
support (docs/BENCHMARKS.md), chosen once for every dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

from segls.plan.rules import Choice

MIN_ITERS = 500  # the default run's validation mIoU was still rising until about 400
UPGRADE_ITERS = 2000  # a bigger model only if it still gets this many iterations ...
UPGRADE_PIXELS = 50_000_000  # ... and the training set holds this many pixels
MAX_EVALS = 6
EVAL_SHARE = 0.1  # evaluations take at most this share of the budget
ADAM_BETA2 = 0.999
COOLDOWN_SHARE = 4  # the linear cool-down takes the last 1/4 of the run
MAX_HEAD_WIDTH = 64


@dataclass(frozen=True)
class ModelTier:
    """One rung of the model ladder."""

    arch: str
    encoder: str
    decoder_channels: tuple[int, ...]
    note: str


MODEL_LADDER = (
    ModelTier("Unet", "resnet18", (256, 128, 64, 32, 16), "smp's decoder widths"),
    ModelTier("Unet", "resnet34", (256, 128, 64, 32, 16), "a deeper encoder"),
    ModelTier("Unet", "resnet50", (256, 128, 64, 32, 16), "a wider, bottleneck encoder"),
)  # fmt: skip


@dataclass(frozen=True)
class Timing:
    """Measured seconds on this machine for one configuration of model and crop."""

    device: str
    step: float  # one training iteration: forward, backward, optimizer and EMA, plus data
    evaluation: float  # one evaluation of the whole validation split
    startup: float  # starting the process, imports, reading the data once
    checkpoint: float = 0.0  # writing one checkpoint (up to two follow each evaluation)
    clock: str = ""  # how the times were measured
    wall_step: float | None = None  # a wall-clock step on an idle CPU, as a check; else None


def decoder_widths(tier: ModelTier, num_classes: int) -> list[int]:
    """The tier's decoder widths, none narrower than the class count (up to 64).

    The segmentation head turns the last decoder stage into one logit per class; a stage
    narrower than the number of classes limits what the logits can tell apart.
    """
    floor = min(num_classes, MAX_HEAD_WIDTH)
    return [max(width, floor) for width in tier.decoder_channels]


def model(tier: ModelTier, num_classes: int, why: str) -> list[Choice]:
    """The ``model.*`` values of a ladder rung."""
    widths = decoder_widths(tier, num_classes)
    widened = "" if list(tier.decoder_channels) == widths else f", widened to {num_classes} classes"
    return [
        Choice("model.arch", tier.arch, "U-Net, the architecture nnU-Net found hard to beat"),
        Choice("model.encoder", tier.encoder, why),
        Choice("model.encoder_weights", None, "random init: nothing is downloaded"),
        Choice("model.kwargs", {"decoder_channels": widths}, f"{tier.note}{widened}"),
    ]  # fmt: skip


def evaluations(budget: float, timing: Timing) -> int:
    """How many times to evaluate: up to 6, within a tenth of the budget, at least once."""
    return max(1, min(MAX_EVALS, int(EVAL_SHARE * budget / max(timing.evaluation, 1e-9))))


def affordable_iterations(budget: float, timing: Timing) -> int:
    """Training iterations that fit in `budget` seconds after start-up and evaluations."""
    per_evaluation = timing.evaluation + 2 * timing.checkpoint
    left = budget - timing.startup - evaluations(budget, timing) * per_evaluation
    return max(0, int(left / timing.step))


def may_upgrade(iterations: int, train_pixels: int) -> bool:
    """Whether a bigger model is worth trying: time for many iterations and data to fill it."""
    return iterations >= UPGRADE_ITERS and train_pixels >= UPGRADE_PIXELS


def schedule(budget: float, timing: Timing) -> tuple[list[Choice], list[str]]:
    """(``schedule.*`` choices, warnings): iterations from the budget and the measured speed.

    The whole budget trains: no rule of the development suite stops earlier (docs/PLANNING.md;
    the best checkpoint is kept besides the last). A constant rate, then a linear cool-down
    to 0 over the last quarter: on each of the suite's sets it ended above the plain
    baseline's poly decay from the first step; a warm-up did not hold.
    """
    count = evaluations(budget, timing)
    affordable = affordable_iterations(budget, timing)
    interval = max(10, affordable // count)  # not rounded further: the budget is the budget
    iterations = interval * count
    warnings = []
    if affordable < MIN_ITERS:
        warnings.append(
            f"the budget affords {affordable} iterations at {timing.step:.3f} s each; the "
            f"project's runs kept improving until about {MIN_ITERS}: raise --budget-minutes"
        )
    clock = f", {timing.clock}" if timing.clock else ""
    why = (f"{budget / 60:.1f} min budget at {timing.step:.3f} s per iteration "
           f"({timing.device}{clock}), {count} evaluations of {timing.evaluation:.1f} s, "
           f"{timing.startup:.0f} s start-up")  # fmt: skip
    return [
        Choice("schedule.max_iters", iterations, why),
        Choice("schedule.warmup_iters", 0, "no warm-up: a tenth of the run's warm-up lost 9.7 "
               "mIoU on one set of the development suite and gained nothing on the others"),
        Choice("schedule.warmup_ratio", 0.1, "unused without a warm-up"),
        Choice("schedule.power", 0.0,
               "a constant rate until the cool-down: against poly decay from the first step, "
               "+0.6 to +3.8 mIoU on each of the five sets of the development suite it was run "
               "on"),
        Choice("schedule.cooldown_iters", iterations // COOLDOWN_SHARE,
               "a linear ramp to 0 over the last quarter settles the final weights"),
        Choice("schedule.min_lr", 0.0, "the cool-down ends at 0"),
        Choice("schedule.eval_interval", interval, f"{count} evaluations in the run"),
        Choice("schedule.checkpoint_interval", interval, "with each evaluation"),
        Choice("schedule.log_interval", max(1, min(50, interval // 5)),
               "5 log lines per evaluation"),
    ], warnings  # fmt: skip


def loss() -> list[Choice]:
    """The project's loss recipe: smoothing 0.1 plus the Lovász-softmax term, no class weights."""
    return [
        Choice("loss.lb_smooth", 0.1,
               "halves the calibration error at equal mIoU (label-smoothing study)"),
        Choice("loss.lovasz_weight", 1.0,
               "plus the Lovasz-softmax term, a surrogate of 1 - IoU that weighs each class "
               "alike: +0.2 to +21.8 mIoU on each of the five sets of the development suite it "
               "was run on, most where a class is rare (docs/PLANNING.md)"),
        Choice("loss.class_weight", None,
               "class weights (median-frequency, background x2) lost 2.3-3.8 mIoU in the recipe "
               "studies; Lovasz balances classes"),
    ]  # fmt: skip


def optimizer() -> list[Choice]:
    """AdamW at 1e-3 with light weight decay."""
    return [
        Choice("optimizer.type", "adamw", "trains a randomly initialised network without tuning"),
        Choice("optimizer.lr", 1.0e-3, "lr 5e-4 and 2e-3 did no better in the recipe studies"),
        Choice("optimizer.weight_decay", 1.0e-4, "0.05 did no better in the recipe study"),
        Choice("optimizer.betas", [0.9, ADAM_BETA2], "Adam's defaults"),
        Choice("optimizer.grad_clip", None,
               "none: no run of the development suite diverged without it"),
        Choice("optimizer.ema_decay", None,
               "no weight average (EMA 0.99): it lost 3.7 mIoU on the suite's rare-class set "
               "at the budgets tested"),
    ]  # fmt: skip


def runtime(device: str) -> list[Choice]:
    """Run where the timing was measured, in float32."""
    amp_why = (
        "bf16 autocast ran 7x slower on a CPU without bf16 units (docs/BENCHMARKS.md)"
        if device == "cpu"
        else "mixed precision is not measured in this project yet"
    )
    return [
        Choice("runtime.device", device, "where the iterations were timed"),
        Choice("runtime.amp", "off", amp_why),
        Choice("runtime.seed", 0, "change it to measure the spread between runs"),
    ]
