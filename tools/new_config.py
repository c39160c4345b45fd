"""Write a training config for a dataset: fingerprint it, apply the rules, time the model here.

    python tools/new_config.py DATA_ROOT [--format folder|voc|cityscapes|ade20k]
        [--out configs/NAME.yaml] [--budget-minutes M] [--device cpu|cuda]

The command line is `segls.cli.new_config`; docs/PLANNING.md says how each value is chosen.
"""

import sys

from segls.cli.new_config import run

if __name__ == "__main__":
    sys.exit(run())
