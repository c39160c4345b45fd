"""Segment your own images with a trained checkpoint.

    python tools/infer.py CONFIG CHECKPOINT INPUT... --out DIR [--batch-size N] [--alpha A]
        [--mode whole|slide] [--crop H W] [--stride H W] [--flip] [--scales S ...]
        [--amp off|fp16|bf16] [key.path=value ...]

INPUT: image files, or folders searched recursively for .png/.jpg/.jpeg/.tif/.tiff. Images
are read and normalised as in validation (`segls.data.read_image`, ``data.mean``/``data.std``),
so they need ``data.in_channels`` channels; any size works. For each image, DIR receives
<name>_mask.png (class indices, same H×W; 16-bit above 256 classes) and <name>_overlay.png
(the image blended with the dataset's palette), where <name> is the file's stem, prefixed
with its folders when two inputs share a stem. Same-size images are predicted in batches of
--batch-size. An unreadable image is reported and skipped; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from segls import checkpoint, cli, config
from segls.config import Config
from segls.data import DataError, build_transform, read_image, resolve_classes
from segls.data.readers import IMAGE_EXTS
from segls.io import write_png
from segls.models import InferenceSettings, predict_logits
from segls.predictions import mask_array, overlay, unique_names
from segls.runtime import progress


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; a key.path=value that is no file is an override, not an INPUT."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="YAML config file (the one the checkpoint was trained with)")
    parser.add_argument("checkpoint", help="checkpoint (.pth): EMA weights are used when present")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--batch-size", type=int, default=4, help="images per pass (same size)")
    parser.add_argument("--alpha", type=float, default=0.5, help="colour weight of the overlay")
    cli.add_inference_arguments(parser)
    argv, overrides = cli.pull_overrides(argv)
    args = parser.parse_intermixed_args(argv)
    args.overrides = overrides
    if not args.inputs:
        parser.error("give at least one INPUT image or folder")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha must be in [0, 1], got {args.alpha}")
    return args


def collect_images(inputs: list[str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The image files named or found under the folders (each once), and inputs that are neither."""
    files, missing, seen = [], [], set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")
            )
            if not found:
                missing.append((path, f"folder has no {'/'.join(IMAGE_EXTS)} images"))
        elif path.is_file():
            found = [path]
        else:
            missing.append((path, "no such file or folder"))
            continue
        for file in found:
            if file.resolve() not in seen:
                seen.add(file.resolve())
                files.append(file)
    return files, missing


class Predictor:
    """Batches same-size images, predicts them, and writes mask and overlay per image."""

    def __init__(
        self,
        model: nn.Module,
        cfg: Config,
        settings: InferenceSettings,
        amp_dtype: torch.dtype | None,
        device: torch.device,
        out_dir: Path,
        batch_size: int,
        alpha: float,
    ) -> None:
        self.model, self.cfg, self.settings, self.amp_dtype = model, cfg, settings, amp_dtype
        self.device, self.out_dir, self.batch_size, self.alpha = device, out_dir, batch_size, alpha
        self.transform = build_transform(cfg.data, train=False)
        self.palette = resolve_classes(cfg.data)[1]
        self.pending: dict[tuple[int, int], list[tuple[torch.Tensor, str]]] = {}
        self.written = 0

    def load(self, path: Path) -> torch.Tensor:
        """The normalised C×H×W image; DataError/OSError naming `path` if it cannot be used."""
        image = read_image(path)
        channels = self.cfg.data.in_channels
        if image.shape[2] != channels:
            raise DataError(
                f"{path}: image has {image.shape[2]} channels but data.in_channels={channels}; "
                "use images like the training ones or a config for this channel count"
            )
        return self.transform(image)[0]

    def add(self, image: torch.Tensor, name: str) -> int:
        """Queue an image; predict its size group once full. Returns the images written."""
        group = self.pending.setdefault(tuple(image.shape[-2:]), [])
        group.append((image, name))
        if len(group) < self.batch_size:
            return 0
        return self._run(self.pending.pop(tuple(image.shape[-2:])))

    def flush(self) -> int:
        """Predict every queued image; returns the images written."""
        groups, self.pending = list(self.pending.values()), {}
        return sum(self._run(group) for group in groups)

    def _run(self, group: list[tuple[torch.Tensor, str]]) -> int:
        """Predict one batch of same-size images and write their files."""
        batch = torch.stack([image for image, _ in group]).to(self.device)
        logits = predict_logits(self.model, batch, None, self.settings, self.amp_dtype)
        data = self.cfg.data
        for (image, name), prediction in zip(group, logits.argmax(dim=1).cpu(), strict=True):
            write_png(self.out_dir / f"{name}_mask.png", mask_array(prediction, data.num_classes))
            shown = overlay(image, prediction, self.palette, data.mean, data.std, self.alpha)
            write_png(self.out_dir / f"{name}_overlay.png", shown)
        self.written += len(group)
        return len(group)


def _described(path: Path, reason: str) -> str:
    """ "<path>: <reason>", without repeating the path when the reason starts with it."""
    return reason if reason.startswith(str(path)) else f"{path}: {reason}"


def main(argv: list[str] | None = None) -> int:
    """Segment the inputs; returns the exit code (1 when any input failed)."""
    args = parse_args(argv)
    cfg, device, amp_dtype, settings, model, weights = cli.setup_inference(args)
    files, failed = collect_images(args.inputs)
    out_dir = Path(args.out)
    predictor = Predictor(
        model, cfg, settings, amp_dtype, device, out_dir, args.batch_size, args.alpha
    )
    print(f"{len(files)} images, {settings.describe()}, amp {cfg.runtime.amp}, {weights} weights")
    for path, reason in failed:
        print(f"skipped {_described(path, reason)}", file=sys.stderr)
    bar = progress(len(files), "infer")
    for path, name in zip(files, unique_names(files), strict=True):
        try:
            image = predictor.load(path)
        except (DataError, OSError, ValueError) as error:
            failed.append((path, str(error)))
            bar.write(f"skipped {_described(path, str(error))}", file=sys.stderr)
            bar.update(1)
        else:
            bar.update(predictor.add(image, name))
    bar.update(predictor.flush())
    bar.close()
    print(f"wrote masks and overlays of {predictor.written} images to {out_dir}")
    if failed:
        print(f"{len(failed)} inputs failed:", file=sys.stderr)
        for path, reason in failed:
            print(f"  {_described(path, reason)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (config.ConfigError, checkpoint.CheckpointError, DataError) as error:
        sys.exit(f"error: {error}")
