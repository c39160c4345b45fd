"""Benchmark the loss forward+backward on a GPU against PyTorch formulations (``--help`` for the options).

    python tools/bench_loss_gpu.py [--small] [--repeats 30] [--json results.json]

The command line is `benchmarks.cli.bench_loss_gpu`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed
from benchmarks.cli.bench_loss_gpu import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run())
