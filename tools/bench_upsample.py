"""Benchmark the loss with bilinear upsampling fused in against interpolating first (``--help`` for the options).

    python tools/bench_upsample.py [--preset x4 x8] [--repeats 5] [--threads T] [--device cuda]

The command line is `segls.cli.bench_upsample`.
"""

import sys

from segls.cli.bench_upsample import run

if __name__ == "__main__":
    sys.exit(run())
