"""Segment your own images with a trained checkpoint (``--help`` for the options).

    python tools/infer.py CONFIG CHECKPOINT INPUT... --out DIR [--batch-size N] [--alpha A] [...]

The command line is `segls.cli.infer`.
"""

import sys

from segls.cli.infer import run

if __name__ == "__main__":
    sys.exit(run())
