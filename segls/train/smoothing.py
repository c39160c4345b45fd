"""Does label smoothing help? Train one config at several ε (and seeds) and compare.

`run_grid` trains ``<out>/eps<ε>_seed<s>/`` for every pair (a finished run is reused, an
interrupted one resumed), `collect` reads any work dirs' final evaluations, and
`summarise` / `markdown_table` / `write_report` turn them into a table, a plot (mIoU and
ECE against ε), a JSON file and a TensorBoard record. The scores are those of the final
evaluation of each run (the last row of its metrics.jsonl), not the best one: choosing the
best evaluation on the validation set would flatter every run.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

from segls import config
from segls.io import write_json, write_text
from segls.predict.plots import line_charts, save_png
from segls.train import checkpoint
from segls.train.loop import train

__all__ = ["collect", "markdown_table", "run_dir_name", "run_grid", "summarise", "write_report"]

SCORES = ("mIoU", "mAcc", "ECE", "NLL", "Brier")


def run_dir_name(epsilon: float, seed: int) -> str:
    """The work-dir name of one run of the grid, e.g. ``eps0.05_seed1``."""
    return f"eps{epsilon:g}_seed{seed}"


def _finished(work_dir: Path, max_iters: int) -> bool:
    """Whether `work_dir` holds a run that reached `max_iters` and recorded its evaluation."""
    rows = _metrics_rows(work_dir)
    return bool(rows) and rows[-1]["iter"] == max_iters


def _same_config(work_dir: Path, cfg: config.Config) -> bool:
    """Whether `work_dir` holds a run of exactly `cfg` (its config.yaml reads back equal)."""
    path = work_dir / "config.yaml"
    try:
        return path.is_file() and config.load(path) == cfg
    except config.ConfigError:
        return False


def _metrics_rows(work_dir: Path) -> list[dict]:
    """The rows of `work_dir`/metrics.jsonl (empty when there is none)."""
    path = work_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def run_grid(
    config_path: str | os.PathLike,
    epsilons: Sequence[float],
    seeds: Sequence[int],
    out_dir: str | os.PathLike,
    overrides: Iterable[str] = (),
    log=print,
) -> list[Path]:
    """Train the config once per (ε, seed) into `out_dir`; returns the run directories.

    ``loss.lb_smooth`` and ``runtime.seed`` are set per run on top of `overrides`;
    ``lb_pos``/``lb_neg`` are cleared so that ε is what varies. A finished run is reused
    and an interrupted one continues from its latest.pth, so the grid can be stopped and
    started again; a run dir holding a run of another config is trained afresh, its
    records replaced.
    """
    out_dir = Path(out_dir)
    runs = []
    for epsilon in epsilons:
        for seed in seeds:
            work_dir = out_dir / run_dir_name(epsilon, seed)
            run_overrides = [
                *overrides,
                f"loss.lb_smooth={epsilon!r}",
                "loss.lb_pos=null",
                "loss.lb_neg=null",
                f"runtime.seed={seed}",
            ]
            cfg = config.load(config_path, run_overrides)
            runs.append(work_dir)
            same_run = _same_config(work_dir, cfg)
            if same_run and _finished(work_dir, cfg.schedule.max_iters):
                log(f"{work_dir}: finished earlier with this config, reusing its scores")
                continue
            resume = (same_run and (work_dir / "latest.pth").is_file()) or None
            log(f"{work_dir}: training with ε={epsilon:g}, seed {seed}")
            try:  # a grid's run dir with another config holds a stale run: replaced
                train(cfg, work_dir, resume=resume, overwrite=resume is None)
            except checkpoint.CheckpointError as error:
                log(f"{work_dir}: cannot resume ({error}); training afresh")
                train(cfg, work_dir, overwrite=True)
    return runs


def collect(work_dirs: Iterable[str | os.PathLike]) -> list[dict]:
    """One record per work dir: ε, seed, iteration and the final evaluation's scores.

    ε and the seed come from the run's config.yaml (``lb_pos``, when set, gives
    ε = 1 - lb_pos + lb_neg as the smoothing mass), the scores from its metrics.jsonl.
    """
    records = []
    for work_dir in map(Path, work_dirs):
        config_path = work_dir / "config.yaml"
        rows = _metrics_rows(work_dir)
        if not config_path.is_file() or not rows:
            raise FileNotFoundError(
                f"{work_dir} is not a finished segls run (it needs config.yaml and "
                "metrics.jsonl); train it first or leave it out"
            )
        cfg = config.load(config_path)
        epsilon = cfg.loss.lb_smooth
        if cfg.loss.lb_pos is not None:
            epsilon = (1 - cfg.loss.lb_pos) + cfg.loss.lb_neg
        final = rows[-1]
        record = {"run": str(work_dir), "epsilon": epsilon, "seed": cfg.runtime.seed}
        record["iter"] = final["iter"]
        for key in SCORES:
            value = final.get(key)
            record[key] = math.nan if value is None else float(value)
        records.append(record)
    return records


def summarise(records: Sequence[dict]) -> list[dict]:
    """Per ε: the number of runs and the mean and sample standard deviation of each score."""
    summary = []
    for epsilon in sorted({record["epsilon"] for record in records}):
        group = [record for record in records if record["epsilon"] == epsilon]
        row = {"epsilon": epsilon, "runs": len(group)}
        for key in SCORES:
            values = [record[key] for record in group if math.isfinite(record[key])]
            row[key] = statistics.fmean(values) if values else math.nan
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else math.nan
        summary.append(row)
    return summary


def _cell(row: dict, key: str) -> str:
    """A score as table text: percent for mIoU/mAcc/ECE, 4 decimals for NLL/Brier, ± std."""
    scale, digits = (100, 2) if key in ("mIoU", "mAcc", "ECE") else (1, 4)
    value, spread = row[key], row.get(f"{key}_std", math.nan)
    if not math.isfinite(value):
        return "-"
    text = f"{scale * value:.{digits}f}"
    return text + (f" ± {scale * spread:.{digits}f}" if math.isfinite(spread) else "")


def markdown_table(summary: Sequence[dict]) -> str:
    """The per-ε summary as a Markdown table (mIoU, mAcc, ECE in percent)."""
    header = "| ε | runs | mIoU (%) | mAcc (%) | ECE (%) | NLL | Brier |"
    lines = [header, "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in summary:
        cells = [f"{row['epsilon']:g}", str(row["runs"]), *(_cell(row, key) for key in SCORES)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(records: Sequence[dict], out_dir: str | os.PathLike) -> dict:
    """Write summary.json, summary.md, smoothing.png and TensorBoard records into `out_dir`.

    Returns the paths written (``json``, ``markdown``, ``plot``). The plot shows mIoU and
    ECE against ε, one series per seed plus the mean; TensorBoard gets the plot as an image,
    the table as text and the per-ε means as scalars with step ``round(1000 * ε)``.
    """
    from torch.utils.tensorboard import SummaryWriter

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(records)
    epsilons = [row["epsilon"] for row in summary]
    panels = {}
    for key, label in (("mIoU", "val mIoU (%)"), ("ECE", "val ECE (%)")):
        series = {"mean": [100 * row[key] for row in summary]}
        seeds = sorted({record["seed"] for record in records})
        if len(seeds) > 1:
            for seed in seeds:
                by_epsilon = {r["epsilon"]: r[key] for r in records if r["seed"] == seed}
                series[f"seed {seed}"] = [100 * by_epsilon.get(e, math.nan) for e in epsilons]
        panels[label] = series
    image = line_charts(epsilons, panels, "label smoothing (epsilon)", "final evaluation")
    paths = {
        "json": out_dir / "summary.json",
        "markdown": out_dir / "summary.md",
        "plot": out_dir / "smoothing.png",
    }
    save_png(image, paths["plot"])
    table = markdown_table(summary)
    write_text(paths["markdown"], table + "\n")
    report = {"runs": list(records), "summary": summary}
    write_json(paths["json"], report)
    writer = SummaryWriter(str(out_dir))
    try:
        writer.add_image("smoothing/plot", image, 0, dataformats="HWC")
        writer.add_text("smoothing/table", table, 0)
        for row in summary:
            for key in SCORES:
                if math.isfinite(row[key]):
                    writer.add_scalar(f"smoothing/{key}", row[key], round(1000 * row["epsilon"]))
    finally:
        writer.close()
    return paths
