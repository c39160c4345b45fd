"""Check in headless Chromium what TensorBoard shows of runs, and screenshot it (``--help``).

    python tools/check_tensorboard.py LOGDIR [--out DIR]

The command line is `benchmarks.cli.check_tensorboard`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed
from benchmarks.cli.check_tensorboard import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run())
