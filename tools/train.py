"""Train a segmentation model from a YAML config (``--help`` for the options).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--overwrite]
        [key.path=value ...]
    torchrun --nproc_per_node=K tools/train.py CONFIG ...   (K processes, one per GPU)

The command line is `segls.cli.train`.
"""

import sys

from segls.cli.train import run

if __name__ == "__main__":
    sys.exit(run())
