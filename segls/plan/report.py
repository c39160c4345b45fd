"""Writing a `Plan`: the config, a Markdown report with two PNGs, the fingerprint as JSON.

Everything goes beside the config (``NAME.yaml``, ``NAME.md``, ``NAME.classes.png``,
``NAME.intensity.png``, ``NAME.fingerprint.json``), atomically. A proposed validation split
is written into the data folder as the list files the folder layout reads.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import numpy as np

from segls.data.fingerprint import Fingerprint, IntensityTotals, SplitStats
from segls.data.image_stats import histogram_percentiles
from segls.io import write_json, write_text
from segls.plan import crops
from segls.plan.charts import class_frequency_chart, intensity_chart
from segls.plan.config_file import write_config
from segls.plan.planner import Plan
from segls.predict.plots import save_png

REPORTED_PERCENTILES = [0.1, 1.0, 50.0, 99.0, 99.8, 99.9]


def default_config_path(plan: Plan, folder: str | Path = "configs") -> Path:
    """``configs/{arch}_{encoder}_{dataset}_{crop}_{iters}.yaml``, as configs/README.md names."""
    cfg = plan.config
    dataset = re.sub(r"[^a-z0-9]+", "_", Path(cfg.data.root).resolve().name.lower()).strip("_")
    crop = "x".join(str(side) for side in cfg.data.crop_size)
    name = (
        f"{cfg.model.arch}_{cfg.model.encoder}_{dataset or 'data'}_{crop}_{cfg.schedule.max_iters}"
    )
    return Path(folder) / f"{name.lower()}.yaml"


def _split_summary(fp: Fingerprint, stats: SplitStats) -> dict:
    """A split's fingerprint as plain numbers, for JSON and the report."""
    records = stats.records
    summary = {
        "images": len(records),
        "sizes": _counts(f"{r.height}x{r.width}" for r in records),
        "channels": _counts(r.channels for r in records),
        "dtypes": _counts(r.dtype for r in records),
        "read_seconds": round(sum(r.read_seconds for r in records), 3),
    }
    totals = stats.main_intensity()
    if totals is not None:
        summary["intensity"] = [_channel_summary(totals, c) for c in range(len(totals.histogram))]
    table = fp.class_table(stats.name)
    summary["classes"] = [
        {"id": index, "name": name, "pixels": int(table["pixels"][index]),
         "images": int(table["images"][index]), "row": _number(table["row"][index]),
         "col": _number(table["col"][index])}
        for index, name in enumerate(fp.class_names)
    ]  # fmt: skip
    summary["ignore_pixels"] = int(table["ignore"])
    summary["invalid_pixels"] = int(table["invalid"])
    return summary


def _channel_summary(totals: IntensityTotals, channel: int) -> dict:
    """One channel's range, percentiles, and mean/std under both scalings."""
    counts = totals.histogram[channel]
    quantiles = histogram_percentiles(totals.bin_values, counts, REPORTED_PERCENTILES)
    summary = {
        "min": float(totals.minimum[channel]),
        "max": float(totals.maximum[channel]),
        "percentiles": {
            str(q): float(v) for q, v in zip(REPORTED_PERCENTILES, quantiles, strict=True)
        },
    }
    for scaling in ("dtype", "percentile"):
        mean, std = totals.mean_std(scaling)
        summary[f"mean_{scaling}"], summary[f"std_{scaling}"] = (
            float(mean[channel]),
            float(std[channel]),
        )
    return summary


def _counts(items) -> dict[str, int]:
    """How often each item occurs, most common first (keys as strings, for JSON)."""
    counted: dict[str, int] = {}
    for item in items:
        counted[str(item)] = counted.get(str(item), 0) + 1
    return dict(sorted(counted.items(), key=lambda pair: -pair[1]))


def _number(value: float) -> float | None:
    """A float, or None for NaN."""
    return None if np.isnan(value) else round(float(value), 4)


def fingerprint_summary(fp: Fingerprint) -> dict:
    """The fingerprint as plain data: per split sizes, intensities and classes; the problems."""
    return {
        "root": fp.root, "format": fp.format, "class_source": fp.class_source,
        "class_names": fp.class_names, "ignore_index": fp.ignore_index,
        "splits": {name: _split_summary(fp, stats) for name, stats in fp.splits.items()},
        "other_splits": fp.other_splits,
        "problems": [vars(problem) for problem in fp.problems],
        "proposed_lists": fp.proposed_lists,
    }  # fmt: skip


def _table(header: list[str], rows: list[list]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def markdown(plan: Plan, config_path: Path, command: str) -> str:
    """The report: problems, splits, intensities, classes, every choice and the timings."""
    fp, stem = plan.fingerprint, config_path.stem
    summary = fingerprint_summary(fp)
    blocking = sum(problem.blocking for problem in fp.problems)
    lines = [
        f"# Plan for `{fp.root}`", "",
        f"Generated on {datetime.date.today()} by `{command}`.", "",
        f"- config: [`{config_path.name}`]({config_path.name})",
        f"- train: `python tools/train.py {config_path}`",
        "- watch: `tensorboard --logdir work_dirs`", "",
        f"## Problems ({len(fp.problems)}, {blocking} blocking)", "",
    ]  # fmt: skip
    for problem in fp.problems:
        label = "**blocking**" if problem.blocking else "note"
        lines.append(f"- {label} `{problem.kind}`: {problem.message}")
    lines += [f"- note: {warning}" for warning in plan.warnings]
    lines += ["", "## Splits", ""]
    rows = [[name, s["images"], ", ".join(f"{k} ({v})" for k, v in list(s["sizes"].items())[:3]),
             ", ".join(s["channels"]), ", ".join(s["dtypes"]), f"{s['read_seconds']:.1f} s"]
            for name, s in summary["splits"].items()]  # fmt: skip
    rows += [[name, count, "", "", "", "not read"] for name, count in fp.other_splits.items()]
    lines += _table(["split", "images", "sizes (HxW)", "channels", "dtypes", "read"], rows)
    lines += ["", f"## Intensities ({fp.train_split})", ""]
    header = ["channel", "min"] + [f"{q}%" for q in REPORTED_PERCENTILES] + ["max"]
    header += ["mean / std (dtype)", "mean / std (percentile)"]
    channels = summary["splits"][fp.train_split].get("intensity", [])
    rows = [[c, f"{ch['min']:.4g}", *(f"{v:.4g}" for v in ch["percentiles"].values()),
             f"{ch['max']:.4g}", f"{ch['mean_dtype']:.4g} / {ch['std_dtype']:.4g}",
             f"{ch['mean_percentile']:.4g} / {ch['std_percentile']:.4g}"]
            for c, ch in enumerate(channels)]  # fmt: skip
    lines += _table(header, rows) + ["", f"![intensity histograms]({stem}.intensity.png)", ""]
    lines += _class_lines(fp, summary, stem) + _presence_lines(plan)
    lines += ["", "## Choices", ""]
    choices = [[f"`{c.key}`", f"`{c.value}`", c.why] for c in plan.choices.values()]
    lines += _table(["key", "value", "why"], choices)
    lines += ["", f"## Timing on this machine (budget {plan.budget_seconds / 60:.1f} min)", ""]
    clocks = sorted({p.timing.clock for p in plan.probes if p.timing.clock})
    lines += [f"Times are {' and '.join(clocks)}: the same on a busy machine as on an idle one "
              "(docs/PLANNING.md)." if clocks else "", ""]  # fmt: skip
    rows = [[f"{p.arch}/{p.encoder}", "x".join(map(str, p.crop)), f"{p.timing.step:.3f}",
             "-" if p.timing.wall_step is None else f"{p.timing.wall_step:.3f}",
             f"{p.timing.evaluation:.2f}", f"{p.timing.startup:.1f}", f"{p.timing.checkpoint:.2f}",
             p.iterations] for p in plan.probes]  # fmt: skip
    lines += _table(["model", "crop", "s / step", "wall s / step (idle check)", "s / evaluation",
                     "start-up s", "s / checkpoint", "iterations affordable"], rows)  # fmt: skip
    return "\n".join(lines) + "\n"


def _presence_lines(plan: Plan) -> list[str]:
    """The share of training crops that hold each class, plain and as planned."""
    if plan.presence is None:
        return []
    cfg = plan.config.data
    lines = ["", f"## Classes in training crops ({'x'.join(map(str, cfg.crop_size))})", "",
             f"Crops drawn from the training masks (up to {crops.MAX_MASK_PIXELS} pixels of them, "
             "spread evenly) as training draws them "
             f"({crops.CROPS} crops); `data.class_crop` = {cfg.class_crop}.", ""]  # fmt: skip
    rows = [[index, name, f"{plain:.0%}", f"{planned:.0%}"] for index, (name, plain, planned)
            in enumerate(zip(plan.fingerprint.class_names, plan.presence.plain,
                             plan.presence.planned, strict=True))]  # fmt: skip
    return lines + _table(["id", "name", "random crops", "planned crops"], rows)


def _class_lines(fp: Fingerprint, summary: dict, stem: str) -> list[str]:
    """The classes section: pixel and image shares per split, centres, ignored pixels."""
    lines = [f"## Classes ({fp.num_classes}, names from {fp.class_source})", ""]
    splits = summary["splits"]
    header, columns = ["id", "name"], []
    for name in (fp.train_split, fp.val_split):
        total = max(sum(c["pixels"] for c in splits[name]["classes"]), 1)
        images = max(splits[name]["images"], 1)
        header += [f"{name} pixels", f"{name} images"]
        columns.append([(f"{c['pixels'] / total:.2%}", f"{c['images']}/{images}")
                        for c in splits[name]["classes"]])  # fmt: skip
    header.append(f"centre in {fp.train_split} (row, col)")
    rows = []
    for index, entry in enumerate(splits[fp.train_split]["classes"]):
        cells = [cell for column in columns for cell in column[index]]
        rows.append([index, entry["name"], *cells, f"{entry['row']}, {entry['col']}"])
    lines += _table(header, rows)
    ignored = ", ".join(f"{name}: {s['ignore_pixels']}" for name, s in splits.items())
    lines += ["", f"Ignored pixels (value {fp.ignore_index}): {ignored}.", ""]
    return lines + [f"![class frequency]({stem}.classes.png)"]


def write_plan(plan: Plan, config_path: str | Path, command: str) -> dict[str, Path]:
    """Write the split lists (if proposed), the config, the report, the PNGs and the JSON."""
    config_path = Path(config_path)
    fp = plan.fingerprint
    paths: dict[str, Path] = {}
    for name, lines in fp.proposed_lists.items():
        paths[name] = Path(fp.root) / name
        write_text(paths[name], "".join(f"{line}\n" for line in lines))
    header = [
        f"Generated on {datetime.date.today()} by `{command}` from a fingerprint of "
        f"{len(fp.train.records)} training and {len(fp.val.records)} validation images; the "
        f"report is {config_path.stem}.md. Each value says why it was chosen ('default': no "
        "rule sets it). Edit freely.",
        f"Train: python tools/train.py {config_path}",
    ]
    write_config(plan.config, plan.choices.values(), header, config_path)
    paths["config"] = config_path
    base = config_path.with_suffix("")
    paths["classes_png"] = base.with_name(f"{base.name}.classes.png")
    paths["intensity_png"] = base.with_name(f"{base.name}.intensity.png")
    paths["fingerprint"] = base.with_name(f"{base.name}.fingerprint.json")
    paths["report"] = base.with_name(f"{base.name}.md")
    save_png(class_frequency_chart(fp), paths["classes_png"])
    save_png(intensity_chart(fp), paths["intensity_png"])
    write_json(paths["fingerprint"], fingerprint_summary(fp))
    write_text(paths["report"], markdown(plan, config_path, command))
    return paths
