"""Does label smoothing help? Train a config at several ε and compare (``--help`` for the options).

    python tools/compare_smoothing.py CONFIG [--eps 0 0.05 0.1 0.2] [--seeds 0] [--out DIR] [...]
    python tools/compare_smoothing.py --collect WORK_DIR [WORK_DIR ...] [--out DIR]

The command line is `segls.cli.compare_smoothing`.
"""

import sys

from segls.cli.compare_smoothing import run

if __name__ == "__main__":
    sys.exit(run())
