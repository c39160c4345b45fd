"""Export a checkpoint's model to ONNX (dynamic batch, height and width).

    python tools/export.py CONFIG CHECKPOINT --out model.onnx [--no-verify] [key.path=value ...]

The graph maps ``images`` (N×in_channels×H×W float32, normalised with data.mean/std) to
``logits`` (N×num_classes×H×W); H and W may be any size of at least the encoder stride
(padding to the stride happens inside the graph, see `segls.onnx_export`). EMA weights are
used when the checkpoint has them. Unless --no-verify, onnxruntime (CPU) runs the file on a
random input of a size that needs padding and the largest difference from PyTorch is
printed; above the tolerance (1e-4, absolute or relative), or when onnxruntime cannot run
the file, the exit code is 1. Needs ``pip install -e '.[export]'``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segls import checkpoint, cli, config
from segls.models import forward_padded, output_stride
from segls.onnx_export import export_onnx, require

TOLERANCE = 1e-4  # |onnx - torch| <= TOLERANCE * (1 + |torch|), elementwise


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="YAML config file (the one the checkpoint was trained with)")
    parser.add_argument("checkpoint", help="checkpoint (.pth): EMA weights are used when present")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.num_classes=4")
    return parser.parse_intermixed_args(argv)


def verify(model: nn.Module, path: Path, in_channels: int, seed: int = 0) -> float:
    """Largest ``|onnx - torch| / (1 + |torch|)`` over a batch of 2 random images off the stride."""
    require("onnxruntime")
    import onnxruntime

    stride = output_stride(model)
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(2, in_channels, 3 * stride + 5, 2 * stride + 3, generator=generator)
    with torch.no_grad():
        expected = forward_padded(model.eval(), images).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(["logits"], {"images": images.numpy()})
    return float(np.max(np.abs(actual - expected) / (1.0 + np.abs(expected))))


def main(argv: list[str] | None = None) -> int:
    """Export (and check) the model; returns the exit code."""
    args = parse_args(argv)
    require("onnx", "onnxscript", *(() if args.no_verify else ("onnxruntime",)))
    cfg = config.load(args.config, args.overrides)
    model, weights = cli.load_model(cfg, args.checkpoint, torch.device("cpu"))
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


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ImportError, config.ConfigError, checkpoint.CheckpointError) as error:
        sys.exit(f"error: {error}")
