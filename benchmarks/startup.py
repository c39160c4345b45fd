"""How long a command takes to report a bad config: each run in a fresh Python process.

A command loads and checks its config before it imports torch (`segls.cli.common`), so a
misspelled override is reported in the time Python, PyYAML, NumPy and OpenCV take to start.
`time_commands` measures that wall time, and the time of importing torch alone for scale.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["commands", "format_report", "time_command", "time_commands"]


def commands(config: str) -> dict[str, list[str]]:
    """The timed command lines, by the name the report gives them."""
    python = sys.executable
    return {
        f"tools/train.py {config} bad.key=1": [python, "tools/train.py", config, "bad.key=1"],
        "python -c 'import torch'": [python, "-c", "import torch"],
        "python -c pass": [python, "-c", "pass"],
    }


def time_command(argv: Sequence[str], cwd: str | Path = ".") -> tuple[float, int, str]:
    """(wall seconds, exit status, last line of stderr) of one run of `argv`."""
    start = time.perf_counter()
    done = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = done.stderr.strip().splitlines()
    return seconds, done.returncode, lines[-1] if lines else ""


def time_commands(config: str, repeats: int, cwd: str | Path = ".") -> list[dict]:
    """Run each of `commands(config)` `repeats` times, interleaved; one row per command.

    Interleaving spreads any change of the machine's load over all the commands alike.
    """
    timed = commands(config)
    runs: dict[str, list[tuple[float, int, str]]] = {name: [] for name in timed}
    for _ in range(repeats):
        for name, argv in timed.items():
            runs[name].append(time_command(argv, cwd))
    rows = []
    for name, results in runs.items():
        seconds = [result[0] for result in results]
        rows.append(
            {
                "command": name,
                "median_s": statistics.median(seconds),
                "min_s": min(seconds),
                "max_s": max(seconds),
                "exit_status": sorted({result[1] for result in results}),
                "stderr": results[-1][2],
            }
        )
    return rows


def format_report(rows: list[dict], repeats: int, load_before: Sequence[float]) -> str:
    """A Markdown table of the rows, with the machine's load averages."""
    load_after = os.getloadavg()
    lines = [
        f"{repeats} runs each, interleaved; load average (1, 5, 15 min) before "
        f"{', '.join(f'{v:.1f}' for v in load_before)}, after "
        f"{', '.join(f'{v:.1f}' for v in load_after)}; {os.cpu_count()} CPUs",
        "",
        "| command | median s | min s | max s | exit status |",
        "|---|---:|---:|---:|---|",
    ]
    for row in rows:
        status = ", ".join(str(code) for code in row["exit_status"])
        lines.append(
            f"| `{row['command']}` | {row['median_s']:.2f} | {row['min_s']:.2f} | "
            f"{row['max_s']:.2f} | {status} |"
        )
    return "\n".join(lines) + "\n"
