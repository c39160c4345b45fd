"""Everything a first CUDA device must show, in one call of at most 7 minutes (``--help``).

    python tools/gpu_check.py --out DIR

The command line is `segls.cli.gpu_check`; docs/BENCHMARKS.md gives the command for the
bare GPU machine.
"""

import sys

from segls.cli.gpu_check import run

if __name__ == "__main__":
    sys.exit(run())
