"""Time how fast a command reports a bad config (``--help`` for the options).

    python tools/bench_startup.py [CONFIG] [--repeats 5]

The command line is `segls.cli.bench_startup`.
"""

import sys

from segls.cli.bench_startup import run

if __name__ == "__main__":
    sys.exit(run())
