"""Benchmark the loss with bilinear upsampling fused in against interpolating first (``--help`` for the options).

    python tools/bench_upsample.py [--preset x4 x8] [--repeats 5] [--threads T] [--device cuda]

The command line is `benchmarks.cli.bench_upsample`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed
from benchmarks.cli.bench_upsample import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run())
