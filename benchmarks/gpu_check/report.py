"""The GPU check's report: the machine and versions, then each section's rows and targets.

`write` puts ``gpu_report.json`` (everything, tracebacks included) and ``gpu_report.md``
(for reading and for pasting into docs/BENCHMARKS.md) into the report folder.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
import subprocess
from pathlib import Path

import torch

from segls import __version__
from segls.io import write_json, write_text

__all__ = ["environment", "markdown", "write"]

_PACKAGES = (
    "torch", "triton", "segmentation-models-pytorch", "timm", "albumentations", "numpy",
)  # fmt: skip
_HIDDEN_COLUMNS = {"status", "traceback"}


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _command_output(command: list[str], cwd: Path | None = None) -> str | None:
    """The first line `command` prints, or None if it cannot run."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if done.returncode == 0 and lines else None


def environment(device: torch.device, smoke: bool) -> dict:
    """Device, driver, CUDA, package versions, commit and date: what the figures belong to."""
    env = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": "smoke (tiny shapes)" if smoke else "full",
        "python": platform.python_version(),
        "segls": __version__,
        "commit": _command_output(["git", "rev-parse", "--short", "HEAD"], Path(__file__).parent),
        **{package: _version(package) for package in _PACKAGES},
        "cuda_runtime": torch.version.cuda,
        "device": "cpu (no CUDA device)",
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["device"] = f"{props.name} ({device}), {props.total_memory / 2**30:.0f} GiB"
        env["capability"] = f"{props.major}.{props.minor}"
        env["multiprocessors"] = props.multi_processor_count
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        env["driver"] = _command_output(query) or "unknown (nvidia-smi did not answer)"
    return env


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/").replace("\n", " ")


def _table(rows: list[dict], status: bool = True) -> list[str]:
    """Rows as a Markdown table: the union of their keys, status last."""
    columns = [key for row in rows for key in row if key not in _HIDDEN_COLUMNS]
    columns = list(dict.fromkeys(columns)) + (["status"] if status else [])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key)) for key in columns) + " |")
    return lines


def _section_lines(record: dict) -> list[str]:
    """One section: heading, time against budget, notes, targets, rows, tracebacks."""
    lines = [
        f"## {record['title']}",
        "",
        f"Status: **{record['status']}**, {record['seconds']:.1f} s of a {record['budget_s']:.0f} s "
        f"budget ({record['budget_reason']}).",
        "",
    ]
    lines += [f"- {note}" for note in record.get("notes", [])]
    lines += [""] if record.get("notes") else []
    if record.get("checks"):
        lines += ["| target | measured | met |", "|---|---|---|"]
        for check in record["checks"]:
            met = {True: "yes", False: "**NO**", None: "–"}[check["ok"]]
            lines.append(f"| {check['target']} | {_cell(check['value'])} | {met} |")
        lines.append("")
    for name, rows in record.get("tables", {}).items():
        lines += [f"{name}:", ""] + _table(rows, status=False) + [""]
    if record.get("rows"):
        lines += _table(record["rows"]) + [""]
    tracebacks = [record["traceback"]] if record.get("traceback") else []
    tracebacks += [row["traceback"] for row in record.get("rows", []) if row.get("traceback")]
    for text in tracebacks:
        lines += ["```", text.rstrip(), "```", ""]
    return lines


def markdown(env: dict, records: list[dict], total_s: float) -> str:
    """The whole report as Markdown."""
    lines = ["# segls GPU check", ""]
    lines += [f"- {key}: {value}" for key, value in env.items()]
    lines += [f"- total time: {total_s:.0f} s", "", "| section | status | seconds |"]
    lines += ["|---|---|---:|"]
    lines += [f"| {r['title']} | {r['status']} | {r['seconds']:.1f} |" for r in records]
    lines.append("")
    for record in records:
        lines += _section_lines(record)
    return "\n".join(lines) + "\n"


def write(out_dir: Path, env: dict, records: list[dict], total_s: float) -> None:
    """Write gpu_report.json and gpu_report.md into `out_dir`."""
    data = {"environment": env, "total_s": total_s, "sections": records}
    write_json(out_dir / "gpu_report.json", data)
    write_text(out_dir / "gpu_report.md", markdown(env, records, total_s))
