"""Export a checkpoint's model to ONNX (dynamic batch, height and width) (``--help`` for the options).

    python tools/export.py CONFIG CHECKPOINT --out model.onnx [--no-verify] [key.path=value ...]

The command line is `segls.cli.export`.
"""

import sys

from segls.cli.export import run

if __name__ == "__main__":
    sys.exit(run())
