"""torchrun that exits like one process: 143 after a clean stop on SIGTERM (``--help``).

    python tools/torchrun.py --nproc_per_node=K tools/train.py CONFIG [...]

The command line is `segls.cli.torchrun`.
"""

import sys

from segls.cli.torchrun import run

if __name__ == "__main__":
    sys.exit(run())
