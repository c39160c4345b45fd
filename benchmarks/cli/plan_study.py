"""Generated configs against a plain baseline across datasets and seeds (docs/PLANNING.md).

For each dataset: plan a config with `tools/new_config.py` at one budget, then train it
(arm ``gen``: the rules as committed), the plain baseline made from it (``base``: same
data, crop, batch, model and iterations; U-Net with smp's decoder, cross-entropy with
smoothing 0.1, AdamW 1e-3 with poly decay from the start, a horizontal flip as the only
augmentation, nothing else) and, with ``old``, the planner's former extras on top of
``gen`` (Lovász weight 1, weight average 0.99, flip evaluation where mirroring is safe,
half-width decoder, constant rate with a linear cool-down over the last quarter). The
final checkpoint of each ``gen`` run is also evaluated with flip averaging (``gen+flip``).
``ema``, ``lovasz``, ``cooldown`` and ``half`` add one former extra each to ``final`` (the
rules of the first study: no warm-up, rescaling, Lovász term or cool-down, poly decay, flip
evaluation where mirroring is safe), ``lovasz_cooldown`` two of them together (the rules
as committed since the second study), and ``scaling`` trains ``final`` with the other
``data.scaling`` mode (its mean and std from the training pixels). Arms share the
iteration count, so they differ only in what the recipe does with the time.

Runs go `--jobs` at a time with `--threads` torch threads each; finished runs are
reused, so the command can be stopped and started again. Results: OUT/results.json and
OUT/results.md (mean and spread of the final validation mIoU per dataset and arm).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from segls.io import write_json, write_text

REPO = Path(__file__).resolve().parents[2]
ARMS = (
    "base",
    "gen",
    "old",
    "noclass",
    "hflip",
    "final",
    "final_noclass",
    "finalscale",
    "ema",
    "lovasz",
    "cooldown",
    "half",
    "lovasz_cooldown",
    "scaling",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", nargs="+", type=Path, required=True, help="dataset folders")
    parser.add_argument("--budget-minutes", type=float, default=3.0)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=ARMS,
        default=["base", "gen", "old"],
        help="noclass: gen without class-aware crops (only where gen has them)",
    )
    parser.add_argument("--flip-arms", nargs="*", choices=ARMS, default=["gen"],
                        help="arms whose final checkpoint is also evaluated with flip averaging")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=2, help="runs at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", type=Path, default=Path("work_dirs/plan_study"))
    parser.add_argument("--report-only", action="store_true",
                        help="write the tables from the runs in OUT; plan and train nothing")  # fmt: skip
    return parser.parse_args(argv)


def arm_overrides(arm: str, cfg: dict) -> list[str] | None:
    """The overrides that turn the generated config `cfg` into `arm` (None: not applicable)."""
    iters = cfg["schedule"]["max_iters"]
    if arm == "gen":
        return []
    flip = str(cfg["data"]["hflip"] > 0).lower()
    # The rules of the first study (no warm-up or rescaling, flip evaluation, no Lovász term,
    # poly decay), whichever planner wrote `cfg`.
    final = ["schedule.warmup_iters=0", f"eval.flip={flip}", "data.scale_range=[1,1]",
             "loss.lovasz_weight=0", "schedule.power=1", "schedule.cooldown_iters=0"]  # fmt: skip
    if arm == "final":
        return final
    if arm == "finalscale":  # the same with the plan's random rescaling, where it had one
        rescaled = cfg["data"]["scale_range"] != [1.0, 1.0]
        return [o for o in final if not o.startswith("data.scale_range")] if rescaled else None
    if arm == "final_noclass":
        return final + ["data.class_crop=0"] if cfg["data"].get("class_crop", 0) > 0 else None
    if arm == "noclass":
        return ["data.class_crop=0"] if cfg["data"].get("class_crop", 0) > 0 else None
    if arm == "hflip":  # no up/down mirroring or turns, where the plan had them
        turned = cfg["data"]["vflip"] > 0 or cfg["data"]["rotate90"] > 0
        return ["data.vflip=0", "data.rotate90=0"] if turned else None
    if arm == "base":
        return ["data.hflip=0.5", "data.vflip=0", "data.rotate90=0", "data.scale_range=[1,1]",
                "data.photometric=0", "data.class_crop=0", "loss.lovasz_weight=0",
                "loss.class_weight=null", "optimizer.type=adamw", "optimizer.lr=0.001",
                "optimizer.ema_decay=null", "schedule.power=1", "schedule.warmup_iters=0",
                "schedule.cooldown_iters=0", "eval.flip=false",
                "model.kwargs={decoder_channels: [256, 128, 64, 32, 16]}"]  # fmt: skip
    floor = min(cfg["data"]["num_classes"], 64)
    half = [max(width, floor) for width in (128, 64, 32, 16, 8)]
    single = {  # the former extras one at a time, on top of the rules after the study
        "ema": ["optimizer.ema_decay=0.99"],
        "lovasz": ["loss.lovasz_weight=1"],
        "cooldown": ["schedule.power=0", f"schedule.cooldown_iters={iters // 4}"],
        "half": [f"model.kwargs={{decoder_channels: {half}}}"],
    }
    single["lovasz_cooldown"] = single["lovasz"] + single["cooldown"]
    if arm in single:
        return final + single[arm]
    if arm == "scaling":  # the other scaling mode, with the mean and std that go with it
        other = "dtype" if cfg["data"]["scaling"] == "percentile" else "percentile"
        mean, std = other_normalisation(cfg["data"]["root"], cfg["data"]["format"], other)
        return final + [f"data.scaling={other}", f"data.mean={mean}", f"data.std={std}"]
    if arm == "old":
        return ["loss.lovasz_weight=1", "optimizer.ema_decay=0.99", f"eval.flip={flip}",
                f"model.kwargs={{decoder_channels: {half}}}", "schedule.power=0",
                f"schedule.cooldown_iters={iters // 4}"]  # fmt: skip
    raise ValueError(arm)


def other_normalisation(
    root: str, cfg_format: str, scaling: str
) -> tuple[list[float], list[float]]:
    """The mean and std of `root`'s training pixels after ``data.scaling`` = `scaling`."""
    from segls.config import DataConfig
    from segls.data.fingerprint import fingerprint
    from segls.data.inventory import survey

    fp = fingerprint(survey(REPO / root, cfg_format), DataConfig().percentiles)
    mean, std = fp.train.main_intensity().mean_std(scaling)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def final_row(work_dir: Path) -> dict | None:
    """The last evaluation row of a run's metrics.jsonl, or None."""
    path = work_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[-1] if rows else None


def plan(root: Path, out: Path, budget: float, log) -> Path:
    """The generated config of `root` (planned once; reused when present)."""
    config = out / root.name / "gen.yaml"
    if not config.is_file():
        config.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "tools/new_config.py", str(root), "--budget-minutes",
                   str(budget), "--device", "cpu", "--out", str(config)]  # fmt: skip
        log(" ".join(command))
        subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return config


def run_jobs(jobs: list[tuple[str, list[str], Path]], parallel: int, log) -> None:
    """Run (name, command, log file) jobs `parallel` at a time."""
    pending, running = list(jobs), []
    while pending or running:
        while pending and len(running) < parallel:
            name, command, log_path = pending.pop(0)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            handle = log_path.open("w")
            running.append((name, subprocess.Popen(command, cwd=REPO, stdout=handle,
                                                   stderr=subprocess.STDOUT), handle, time.time()))  # fmt: skip
        time.sleep(2)
        for entry in list(running):
            name, process, handle, start = entry
            if process.poll() is not None:
                handle.close()
                running.remove(entry)
                log(f"{name}: exit {process.returncode} after {time.time() - start:.0f} s")


def run(argv: list[str] | None = None) -> int:
    """Plan, train every arm and seed, evaluate, and write the tables."""
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    env_threads = f"runtime.num_threads={args.threads}"

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    if args.report_only:
        configs = {root.name: args.out / root.name / "gen.yaml" for root in args.sets}
        configs = {name: path for name, path in configs.items() if path.is_file()}
        results = collect(args, configs)
        write_text(args.out / "results.md", table(results, args))
        print(table(results, args))
        return 0
    configs = {root.name: plan(root, args.out, args.budget_minutes, log) for root in args.sets}
    jobs = []  # arm by arm, so that an early stop leaves whole comparisons
    for arm, (name, config), seed in itertools.product(args.arms, configs.items(), args.seeds):
        cfg = yaml.safe_load(config.read_text())
        overrides = arm_overrides(arm, cfg)
        if overrides is None:
            continue
        work = args.out / name / f"{arm}-s{seed}"
        row = final_row(work)
        if row is not None and row.get("iter") == cfg["schedule"]["max_iters"]:
            continue  # finished before
        command = [sys.executable, "tools/train.py", str(config), *overrides,
                   f"runtime.seed={seed}", env_threads, "--work-dir", str(work),
                   "--overwrite"]  # fmt: skip
        jobs.append((f"{name}/{arm}-s{seed}", command, work.with_suffix(".log")))
    run_jobs(jobs, args.jobs, log)
    flips = []
    for (name, config), arm, seed in itertools.product(configs.items(), args.flip_arms, args.seeds):
        work = args.out / name / f"{arm}-s{seed}"
        scores = work / "test_flip" / "scores.json"
        if (work / "latest.pth").is_file() and not scores.is_file():
            command = [sys.executable, "tools/test.py", str(config), str(work / "latest.pth"),
                       "--flip", env_threads, "--out", str(work / "test_flip")]  # fmt: skip
            flips.append((f"{name}/{arm}+flip-s{seed}", command, work / "test_flip.log"))
    run_jobs(flips, args.jobs, log)
    results = collect(args, configs)
    write_json(args.out / "results.json", results)
    write_text(args.out / "results.md", table(results, args))
    print(table(results, args))
    return 0


def collect(args: argparse.Namespace, configs: dict[str, Path]) -> dict:
    """Per dataset and arm, the final mIoU (and per-class IoU) of each seed."""
    results: dict = {}
    for name, config in configs.items():
        cfg = yaml.safe_load(config.read_text())
        entry = results.setdefault(name, {"iters": cfg["schedule"]["max_iters"],
                                          "crop": cfg["data"]["crop_size"],
                                          "class_crop": cfg["data"].get("class_crop", 0),
                                          "arms": {}})  # fmt: skip
        for arm in [*args.arms, *(f"{arm}+flip" for arm in args.flip_arms)]:
            for seed in args.seeds:
                if arm.endswith("+flip"):
                    path = args.out / name / f"{arm[:-5]}-s{seed}" / "test_flip" / "scores.json"
                    row = json.loads(path.read_text())["scores"] if path.is_file() else None
                else:
                    row = final_row(args.out / name / f"{arm}-s{seed}")
                    if row is not None and row.get("iter") != entry["iters"]:
                        row = None  # stopped early
                if row is not None and row.get("mIoU") is not None:
                    entry["arms"].setdefault(arm, {})[seed] = {
                        "mIoU": row["mIoU"], "IoU": row.get("IoU")}  # fmt: skip
    return results


def table(results: dict, args: argparse.Namespace) -> str:
    """Markdown: final val mIoU (%) per dataset and arm, mean and min-max over seeds."""
    arms = [*args.arms, *(f"{arm}+flip" for arm in args.flip_arms)]
    lines = [f"Budget {args.budget_minutes} min per plan, seeds {args.seeds}; final validation "
             "mIoU (%), mean (min-max).", "",
             "| dataset | iters | crop | class_crop | " + " | ".join(arms) + " |",
             "|---|---|---|---|" + "---|" * len(arms)]  # fmt: skip
    for name, entry in results.items():
        cells = []
        for arm in arms:
            values = [100 * v["mIoU"] for v in entry["arms"].get(arm, {}).values()]
            cells.append(f"{statistics.mean(values):.1f} ({min(values):.1f}-{max(values):.1f})"
                         if values else "-")  # fmt: skip
        crop = "x".join(map(str, entry["crop"]))
        lines.append(f"| {name} | {entry['iters']} | {crop} | {entry['class_crop']} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(run())
