"""From a dataset folder to a planned config: survey, fingerprint, rules, timing.

`plan_dataset` runs the steps and returns a `Plan`; `segls.plan.report.write_plan` writes it.
The data rules (`segls.plan.rules`) fix everything but the crop's final size, the model and
the schedule; those follow the budget: the crop shrinks while the budget affords fewer than
`recipe.MIN_ITERS` iterations, then the model grows while a bigger one still gets
`recipe.UPGRADE_ITERS`, each candidate timed on this machine (`segls.plan.timing`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from segls.config import Config, DataConfig
from segls.data.fingerprint import Fingerprint, fingerprint
from segls.data.inventory import survey
from segls.plan import crops, recipe, rules, timing
from segls.plan.config_file import apply_choices
from segls.plan.recipe import MODEL_LADDER, Timing
from segls.plan.rules import Choice

SLOW_STEP_FACTOR = 4.0  # a first step this many times over the affordable time ends a timing


class PlanError(ValueError):
    """A request the planner cannot serve (a device that is not there, a bad budget)."""


@dataclass
class Probe:
    """One timed candidate: what it was and what it cost."""

    arch: str
    encoder: str
    crop: list[int]
    timing: Timing
    iterations: int


@dataclass
class Plan:
    """A dataset's fingerprint and the config planned from it, with every reason."""

    fingerprint: Fingerprint
    choices: dict[str, Choice]
    config: Config
    budget_seconds: float
    probes: list[Probe] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    presence: crops.Presence | None = None  # share of crops holding each class


def resolve_device(name: str) -> torch.device:
    """The torch device for ``--device`` auto, cpu or cuda; cuda without CUDA is a PlanError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PlanError(
            "--device cuda: CUDA is not available here (torch.cuda.is_available() is False: no "
            f"NVIDIA GPU or driver, or torch {torch.__version__} was built without CUDA); plan "
            "for this machine with --device cpu, or run the tool on the GPU machine"
        )
    if name not in ("cpu", "cuda"):
        raise PlanError(f"--device {name!r}: use cpu, cuda or auto")
    return torch.device(name)


def _data_choices(fp: Fingerprint, device: torch.device) -> dict[str, Choice]:
    """Every choice that does not depend on timing."""
    choices: list[Choice] = []
    choices += rules.layout(fp) + rules.classes(fp) + rules.channels(fp)
    scaling = rules.scaling(fp)
    choices += scaling + rules.normalisation(fp, scaling[0].value)
    choices += rules.crop_and_batch(fp) + rules.flips(fp)
    choices += rules.augmentation(fp, scaling[0].value) + rules.loading(fp) + rules.evaluation(fp)
    choices += recipe.loss() + recipe.optimizer() + recipe.runtime(device.type)
    return {choice.key: choice for choice in choices}


def _with_model(choices: dict[str, Choice], tier_index: int, fp: Fingerprint, why: str) -> dict:
    """`choices` with the model of ladder rung `tier_index`."""
    updated = dict(choices)
    for choice in recipe.model(MODEL_LADDER[tier_index], fp.num_classes, why):
        updated[choice.key] = choice
    return updated


def _fit_crop(plan: Plan, probe: Callable) -> Timing:
    """Shrink the crop (nnU-Net's way) until the budget affords MIN_ITERS iterations."""
    fp, budget = plan.fingerprint, plan.budget_seconds
    median = rules.median_size(fp)
    measured = probe(plan.choices)
    while recipe.affordable_iterations(budget, measured) < recipe.MIN_ITERS:
        crop = tuple(plan.choices["data.crop_size"].value)
        allowed = recipe.affordable_iterations(budget, measured) / recipe.MIN_ITERS
        smaller = rules.shrink_crop(crop, median, 0.9 * crop[0] * crop[1] * max(allowed, 0.01))
        if smaller == crop:
            break
        old = plan.choices["data.crop_size"]
        kept = old.why.split("; budget")[0]
        why = f"{kept}; budget: shrunk to afford {recipe.MIN_ITERS} iterations"
        plan.choices["data.crop_size"] = Choice("data.crop_size", list(smaller), why)
        measured = probe(plan.choices)
    return measured


def _fit_model(plan: Plan, measured: Timing, probe: Callable) -> Timing:
    """Climb the model ladder while the next rung still affords UPGRADE_ITERS iterations."""
    fp, budget = plan.fingerprint, plan.budget_seconds
    train_pixels = sum(r.height * r.width for r in fp.train.records)
    tier = 0
    while tier + 1 < len(MODEL_LADDER) and recipe.may_upgrade(
        recipe.affordable_iterations(budget, measured), train_pixels
    ):
        why = f"affords {recipe.UPGRADE_ITERS}+ iterations on {train_pixels} training pixels"
        candidate = _with_model(plan.choices, tier + 1, fp, why)
        timed = probe(candidate)
        if recipe.affordable_iterations(budget, timed) < recipe.UPGRADE_ITERS:
            break
        tier, plan.choices, measured = tier + 1, candidate, timed
    return measured


def plan_dataset(
    root: str | Path,
    fmt: str = "folder",
    budget_minutes: float = 10.0,
    device: str = "auto",
    log: Callable[[str], object] = print,
) -> Plan:
    """Survey and fingerprint the dataset at `root`, apply the rules, time the candidates."""
    if not budget_minutes > 0:
        raise PlanError(f"--budget-minutes {budget_minutes}: give a positive number of minutes")
    torch_device = resolve_device(device)
    fp = fingerprint(survey(root, fmt), DataConfig().percentiles)
    small = "the smallest rung of the model ladder; bigger ones need more budget or data"
    choices = _with_model(_data_choices(fp, torch_device), 0, fp, small)
    plan = Plan(fp, choices, apply_choices(choices.values()), budget_minutes * 60.0)

    def probe(candidate: dict[str, Choice]) -> Timing:
        cfg = apply_choices(candidate.values())
        allowed = plan.budget_seconds / recipe.MIN_ITERS * SLOW_STEP_FACTOR
        measured = timing.measure(cfg, torch_device, fp, limit=allowed)
        iterations = recipe.affordable_iterations(plan.budget_seconds, measured)
        plan.probes.append(Probe(cfg.model.arch, cfg.model.encoder, list(cfg.data.crop_size),
                                 measured, iterations))  # fmt: skip
        log(f"timed {cfg.model.arch}/{cfg.model.encoder}, crop {cfg.data.crop_size}, batch "
            f"{cfg.data.batch_size} on {torch_device}: {measured.step:.3f} s/step, "
            f"{iterations} iterations in the budget")  # fmt: skip
        return measured

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        measured = _fit_model(plan, _fit_crop(plan, probe), probe)
    schedule, plan.warnings = recipe.schedule(plan.budget_seconds, measured)
    plan.choices.update({choice.key: choice for choice in schedule})
    sampling, plan.presence = crops.class_crop(apply_choices(plan.choices.values()).data, fp)
    plan.choices[sampling.key] = sampling
    plan.warnings += rules.rare_class_notes(fp) + crops.presence_notes(fp, plan.presence)
    plan.config = apply_choices(plan.choices.values())
    if any(problem.blocking for problem in fp.problems):
        plan.warnings.append("the data has blocking problems: training stops on them until fixed")
    return plan
