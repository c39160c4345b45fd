"""Evaluate a checkpoint on the config's validation split (``--help`` for the options).

    python tools/test.py CONFIG CHECKPOINT [--out DIR] [inference flags] [--save-masks] [key.path=value ...]

The command line is `segls.cli.test`.
"""

import sys

from segls.cli.test import run

if __name__ == "__main__":
    sys.exit(run())
