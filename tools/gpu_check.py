"""Everything a first CUDA device must show, in one call of at most 7 minutes (``--help``).

    python tools/gpu_check.py --out DIR

The command line is `benchmarks.cli.gpu_check`; docs/BENCHMARKS.md gives the command for the
bare GPU machine.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed
from benchmarks.cli.gpu_check import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run())
