"""Segment your own images with a trained checkpoint.

    python tools/infer.py CONFIG CHECKPOINT INPUT... --out DIR [--batch-size N] [--alpha A]
        [--mode whole|slide] [--crop H W] [--stride H W] [--flip] [--scales S ...]
        [--amp off|fp16|bf16] [key.path=value ...]

INPUT: image files, or folders searched recursively for .png/.jpg/.jpeg/.tif/.tiff. Images
are read and normalised as in validation (`segls.data.read_image`, ``data.mean``/``data.std``),
so they need ``data.in_channels`` channels; any size works. For each image, DIR receives
<name>_mask.png (class ids at the input's H×W in a palette PNG with the config's colours, as
PASCAL VOC's masks; greyscale with --raw-masks, 16-bit greyscale above 256 classes) and
<name>_overlay.png (the image blended with the dataset's palette), where <name> is the
file's stem, prefixed with its folders when two inputs share a stem. Same-size images are predicted in batches of
--batch-size. An unreadable image, or one whose prediction holds NaN or inf (no files are written for it),
or one that does not fit in memory to read or predict (no files either; --mode slide holds one
row of windows at a time), is reported and skipped; the others are written; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segls.cli import common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; a key.path=value that is no file is an override, not an INPUT."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="YAML config file (the one the checkpoint was trained with)")
    parser.add_argument("checkpoint", help="checkpoint (.pth): EMA weights are used when present")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--batch-size", type=int, default=4, help="images per pass (same size)")
    parser.add_argument("--alpha", type=float, default=0.5, help="colour weight of the overlay")
    parser.add_argument(
        "--raw-masks", action="store_true", help="masks as greyscale class ids, without palette"
    )
    common.add_inference_arguments(parser)
    argv, overrides = common.pull_overrides(argv)
    args = parser.parse_intermixed_args(argv)
    args.overrides = overrides
    if not args.inputs:
        parser.error("give at least one INPUT image or folder")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha must be in [0, 1], got {args.alpha}")
    return args


def _described(path: Path, reason: str) -> str:
    """ "<path>: <reason>", without repeating the path when the reason starts with it."""
    return reason if reason.startswith(str(path)) else f"{path}: {reason}"


def main(argv: list[str] | None = None) -> int:
    """Segment the inputs; returns the exit code (1 when any input failed)."""
    args = parse_args(argv)
    cfg = common.load_config(args)
    # torch, the model and the prediction files, once the config has passed its checks
    from segls.cli.inference import setup_inference
    from segls.data import DataError
    from segls.predict.files import collect_images, mask_kind, unique_names
    from segls.predict.predictor import Predictor
    from segls.runtime import is_out_of_memory, progress

    cfg, device, amp_dtype, settings, model, weights = setup_inference(cfg, args.checkpoint)
    files, failed = collect_images(args.inputs)
    out_dir = Path(args.out)
    predictor = Predictor(
        model, cfg, settings, amp_dtype, device, out_dir, args.batch_size, args.alpha,
        args.raw_masks,
    )  # fmt: skip
    print(f"{len(files)} images, {settings.describe()}, amp {cfg.runtime.amp}, {weights} weights")
    for path, reason in failed:
        print(f"skipped {_described(path, reason)}", file=sys.stderr)
    bar = progress(len(files), "infer")
    for path, name in zip(files, unique_names(files), strict=True):
        try:
            image = predictor.load(path)
        except Exception as error:
            if is_out_of_memory(error):
                reason = f"not enough memory to read this image ({type(error).__name__})"
            elif isinstance(error, (DataError, OSError, ValueError)):
                reason = str(error)
            else:
                raise
            failed.append((path, reason))
            bar.write(f"skipped {_described(path, reason)}", file=sys.stderr)
            bar.update(1)
        else:
            bar.update(predictor.add(image, name))
    bar.update(predictor.flush())
    bar.close()
    paths = dict(zip(unique_names(files), files, strict=True))
    for name, reason in predictor.refused:
        failed.append((paths[name], reason))
        print(f"skipped {_described(paths[name], reason)}", file=sys.stderr)
    kind = mask_kind(cfg.data.num_classes, args.raw_masks)
    print(f"wrote masks ({kind}) and overlays of {predictor.written} images to {out_dir}")
    if failed:
        print(f"{len(failed)} inputs failed:", file=sys.stderr)
        for path, reason in failed:
            print(f"  {_described(path, reason)}", file=sys.stderr)
        return 1
    return 0


def run(argv: list[str] | None = None) -> int:
    """`main`, with the errors a user can act on printed as one line; returns the exit status."""
    return common.run_command(main, argv)
