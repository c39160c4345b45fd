"""Make the development suite's datasets (synthetic and real) under data/devsuite/ (``--help``).

    python tools/make_devsuite.py [--out DIR] [--sets NAME ...] [--seed N] [--overwrite]

The command line is `benchmarks.cli.make_devsuite`; data/README.md describes the sets.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed
from benchmarks.cli.make_devsuite import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run())
