"""Benchmark the loss on the CPU: fwd+bwd time and peak memory above the inputs (``--help`` for the options).

    python tools/bench_loss.py [--shape 4 19 256 512] [--ignore 0.05] [--repeats 15]

The command line is `segls.cli.bench_loss`.
"""

import sys

from segls.cli.bench_loss import run

if __name__ == "__main__":
    sys.exit(run())
