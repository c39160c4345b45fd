"""Check in headless Chromium what TensorBoard shows of runs, and screenshot it (``--help``).

    python tools/check_tensorboard.py LOGDIR [--out DIR]

The command line is `segls.cli.check_tensorboard`.
"""

import sys

from segls.cli.check_tensorboard import run

if __name__ == "__main__":
    sys.exit(run())
