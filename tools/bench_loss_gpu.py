"""Benchmark the loss forward+backward on a GPU against PyTorch formulations (``--help`` for the options).

    python tools/bench_loss_gpu.py [--small] [--repeats 30] [--json results.json]

The command line is `segls.cli.bench_loss_gpu`.
"""

import sys

from segls.cli.bench_loss_gpu import run

if __name__ == "__main__":
    sys.exit(run())
