"""Benchmark the loss on the CPU: fwd+bwd time and peak memory above the inputs (``--help`` for the options).

    python tools/bench_loss.py [--shape 4 19 256 512] [--ignore 0.05] [--repeats 15]

The command line is `benchmarks.cli.bench_loss`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed
from benchmarks.cli.bench_loss import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run())
