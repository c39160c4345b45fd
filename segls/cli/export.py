"""Export a checkpoint's model to ONNX (dynamic batch, height and width).

    python tools/export.py CONFIG CHECKPOINT --out model.onnx [--no-verify] [key.path=value ...]

The graph maps ``images`` (N×in_channels×H×W float32, normalised with data.mean/std) to
``logits`` (N×num_classes×H×W); H and W may be any size of at least the encoder stride
(padding to the stride happens inside the graph, see `segls.predict.export`). EMA weights are
used when the checkpoint has them. Unless --no-verify, onnxruntime (CPU) runs the file on a
random input of a size that needs padding and the largest difference from PyTorch is
printed; above the tolerance (1e-4, absolute or relative), or when onnxruntime cannot run
the file, the exit code is 1. Needs ``pip install -e '.[export]'``.
"""

from __future__ import annotations

import argparse
import sys

from segls import config
from segls.cli import common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="YAML config file (the one the checkpoint was trained with)")
    parser.add_argument("checkpoint", help="checkpoint (.pth): EMA weights are used when present")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.num_classes=4")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Export (and check) the model; returns the exit code."""
    args = parse_args(argv)
    cfg = config.load(args.config, args.overrides)
    # torch, the model and the exporter, once the config has passed its checks
    from segls.cli.inference import load_model
    from segls.predict.export import TOLERANCE, export_onnx, require, verify

    require("onnx", "onnxscript", *(() if args.no_verify else ("onnxruntime",)))
    model, weights = load_model(cfg, args.checkpoint, "cpu")
    path = export_onnx(model, args.out, cfg.data.in_channels)
    print(f"wrote {path} ({weights} weights, input 'images', output 'logits')")
    if args.no_verify:
        return 0
    try:
        error = verify(model, path, cfg.data.in_channels, cfg.runtime.seed)
    except Exception as failure:  # onnxruntime's errors share no public base class
        print(
            f"onnxruntime cannot run {path}: {type(failure).__name__}: {failure}\n"
            "the graph is not usable at other sizes (e.g. PSPNet's adaptive pooling); "
            "try another architecture",
            file=sys.stderr,
        )
        return 1
    verdict = "ok" if error <= TOLERANCE else f"ABOVE the tolerance {TOLERANCE:g}"
    print(f"onnxruntime vs PyTorch: max |difference| / (1 + |logit|) = {error:.2e} ({verdict})")
    return 0 if error <= TOLERANCE else 1


def run(argv: list[str] | None = None) -> int:
    """`main`, with the errors a user can act on printed as one line; returns the exit status."""
    return common.run_command(main, argv, lambda: (ImportError, *common.user_errors()))
