"""Time how fast a command reports a bad config (``--help`` for the options).

    python tools/bench_startup.py [CONFIG] [--repeats 5]

The command line is `benchmarks.cli.bench_startup`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed
from benchmarks.cli.bench_startup import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run())
