"""Generated configs against a plain baseline across datasets and seeds (``--help``).

    python tools/plan_study.py --sets DIR ... [--budget-minutes M] [--seeds N ...] [--out DIR]

The command line is `benchmarks.cli.plan_study`; docs/PLANNING.md holds its results.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed
from benchmarks.cli.plan_study import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run())
