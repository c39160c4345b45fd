"""Benchmark training throughput and peak memory of a config across speed switches (``--help`` for the options).

    python tools/bench_train.py CONFIG [--iters 20] [--warmup 5] [--variants SPEC ...] [...]

The command line is `segls.cli.bench_train`.
"""

import sys

from segls.cli.bench_train import run

if __name__ == "__main__":
    sys.exit(run())
