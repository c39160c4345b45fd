"""Benchmark training throughput and peak memory of a config across speed switches (``--help`` for the options).

    python tools/bench_train.py CONFIG [--iters 20] [--warmup 5] [--variants SPEC ...] [...]

The command line is `benchmarks.cli.bench_train`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed
from benchmarks.cli.bench_train import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run())
