"""The report of the throughput benchmark: what was measured where, and the table of rows."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform

import torch

from segls import __version__, io
from segls.config import Config

__all__ = ["environment", "format_report", "write_json"]


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({device})"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = [
                line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
            ]
        model = names[0] if names else model
    except OSError:
        pass
    return f"CPU: {model} (torch threads: {torch.get_num_threads()})"


def environment(
    cfg: Config, config_path: str, device: torch.device, iters: int, warmup: int
) -> dict:
    """What a reader needs to compare two benchmark tables: device, versions, shapes, date."""
    cpu_memory = "rise of peak RSS (VmHWM) over the RSS before the timed iterations"
    return {
        "device": _device_name(device),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "segmentation_models_pytorch": _version("segmentation-models-pytorch"),
        "segls": __version__,
        "config": str(config_path),
        "model": f"{cfg.model.arch}/{cfg.model.encoder}",
        "crop": list(cfg.data.crop_size),
        "batch": cfg.data.batch_size,
        "in_channels": cfg.data.in_channels,
        "num_classes": cfg.data.num_classes,
        "iters": iters,
        "warmup": warmup,
        "peak_memory": "max_memory_allocated" if device.type == "cuda" else cpu_memory,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def format_report(env: dict, rows: list[dict]) -> str:
    """A header from `env` (see `environment`) and a Markdown table of `rows`."""
    height, width = env["crop"]
    measured = [row["variant"] for row in rows if row["status"] == "ok"]
    baseline = measured[0] if measured else "none measured"
    lines = [
        f"device: {env['device']}",
        f"torch {env['torch']}, triton {env['triton']}, "
        f"smp {env['segmentation_models_pytorch']}, segls {env['segls']}",
        f"config: {env['config']} ({env['model']}), crop {height}x{width}, batch {env['batch']}, "
        f"{env['in_channels']} channels, {env['num_classes']} classes, random input",
        f"{env['iters']} timed iterations after {env['warmup']} warm-up; baseline {baseline}; "
        f"peak memory: {env['peak_memory']}; {env['date']}",
        "",
        "| variant | images/s | speed-up vs baseline | peak memory MiB "
        f"| loss after {env['warmup'] + env['iters']} iters |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"| {row['variant']} | {row['status']} | | | |")
            continue
        peak = "n/a" if row["peak_mib"] is None else f"{row['peak_mib']:.1f}"
        lines.append(
            f"| {row['variant']} | {row['images_per_s']:.1f} | {row['speedup']:.2f}x | "
            f"{peak} | {row['loss']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def write_json(path: str | os.PathLike, env: dict, rows: list[dict]) -> None:
    """Write ``{"environment": env, "rows": rows}`` as JSON to `path`, atomically."""
    io.write_json(path, {"environment": env, "rows": rows})
