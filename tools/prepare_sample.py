"""Convert the ndev-sampledata scratch assay into the bundled 3-class folder dataset (``--help`` for the options).

    python tools/prepare_sample.py [--root DIR] [--source TIFF] [--overwrite]

The command line is `segls.cli.prepare_sample`.
"""

import sys

from segls.cli.prepare_sample import run

if __name__ == "__main__":
    sys.exit(run())
