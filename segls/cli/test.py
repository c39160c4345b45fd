"""Evaluate a checkpoint on the config's validation split.

    python tools/test.py CONFIG CHECKPOINT [--out DIR] [--mode whole|slide] [--crop H W]
        [--stride H W] [--flip] [--scales S ...] [--amp off|fp16|bf16] [--save-masks]
        [key.path=value ...]

Prints the per-class table with its summary (`segls.metrics.format_table`: the mean scores,
and calibration when evaluation reports it), then the loss and the settings, and writes
everything `segls.predict.evaluate` returns to DIR/scores.json and the reliability diagram
(accuracy against confidence) to DIR/reliability.png. DIR defaults to
test_<checkpoint stem>/ beside the checkpoint. The inference flags are shortcuts for the
``eval.*`` and ``runtime.amp`` overrides (configs/README.md). --save-masks also writes each
image's predicted class ids to DIR/masks/<name>.png (one more prediction pass): palette PNGs
as PASCAL VOC's (the config's colours; greyscale with --raw-masks, 16-bit greyscale above
256 classes).

Under ``torchrun --nproc_per_node=K`` the set is sharded as training's evaluation shards it
(`segls.data.build_val_loader`): every image is predicted by one process, the counts and
sums are added up, and process 0 prints and writes the scores.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

from segls.cli import common

if TYPE_CHECKING:
    from segls.cli.inference import InferenceSetup
    from segls.models import InferenceSettings
    from segls.runtime.distributed import Context


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="YAML config file (the one the checkpoint was trained with)")
    parser.add_argument("checkpoint", help="checkpoint (.pth): EMA weights are used when present")
    parser.add_argument("--out", help="output directory (default: test_<stem>/ beside CHECKPOINT)")
    parser.add_argument("--save-masks", action="store_true", help="write the predicted masks")
    parser.add_argument(
        "--raw-masks", action="store_true", help="masks as greyscale class ids, without palette"
    )
    common.add_inference_arguments(parser)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.val_split=test")
    argv, overrides = common.pull_overrides(argv)
    args = parser.parse_intermixed_args(argv)
    args.overrides += overrides
    return args


def summary(scores: dict, settings: InferenceSettings, amp: str, weights: str, count: int) -> str:
    """The line under the table: loss and how the scores were made."""
    loss = scores.get("loss", math.nan)
    return (
        f"val loss {loss:.4f} | {count} images | {settings.describe()} | amp {amp} | "
        f"{weights} weights"
    )


def main(argv: list[str] | None = None) -> dict:
    """Evaluate CHECKPOINT as the arguments say; print, write and return the scores."""
    args = parse_args(argv)
    cfg = common.load_config(args)
    # torch, the model and the evaluation, once the config has passed its checks
    from segls.cli.inference import setup_inference
    from segls.runtime import distributed

    setup = setup_inference(cfg, args.checkpoint)
    context = distributed.setup(setup.device)
    try:
        return _test(args, setup, context)
    finally:
        distributed.cleanup(context)


def _test(args: argparse.Namespace, setup: InferenceSetup, context: Context) -> dict:
    """Evaluate this process's shard; rank 0 prints and writes the whole set's scores."""
    from segls.data import build_val_loader, sample
    from segls.metrics import format_table
    from segls.predict import build_criterion, evaluate
    from segls.predict.files import mask_kind, save_masks, write_scores
    from segls.runtime import EVAL_MEMORY, distributed, lower_on_oom

    cfg, data, settings, device = setup.cfg, setup.cfg.data, setup.settings, context.device
    model = setup.model.to(device)
    if context.is_main:
        sample.prepare_if_bundled(data.root)
    distributed.barrier()
    loader = build_val_loader(cfg, context.rank, context.world_size)
    with lower_on_oom("the evaluation", f"{EVAL_MEMORY}; --scales, --mode, --crop set them"):
        scores = evaluate(
            model, loader, data.num_classes, data.ignore_index, device, setup.amp_dtype,
            build_criterion(cfg).to(device), cfg.eval.calibration_bins, settings,
        )  # fmt: skip
    checkpoint_path = Path(args.checkpoint)
    out_dir = Path(args.out or checkpoint_path.parent / f"test_{checkpoint_path.stem}")
    class_names, count = loader.dataset.class_names, len(loader.dataset)
    if context.is_main:
        print(format_table(scores, class_names))
        print(summary(scores, settings, cfg.runtime.amp, setup.weights, count))
        inference = {"description": settings.describe(), **dataclasses.asdict(settings)}
        record = {
            "config": str(args.config), "checkpoint": str(checkpoint_path),
            "weights": setup.weights, "split": data.val_split, "num_images": count,
            "inference": inference, "amp": cfg.runtime.amp, "class_names": class_names,
            "scores": scores,
        }  # fmt: skip
        title = f"reliability, {checkpoint_path.name} (ECE {100 * scores['ECE']:.2f}%)"
        json_path, png_path = write_scores(out_dir, record, title)
        print(f"wrote {json_path} and {png_path}")
    if args.save_masks:
        masks = out_dir / "masks"
        with lower_on_oom("writing the masks", f"{EVAL_MEMORY}; --scales, --mode, --crop set them"):
            written = save_masks(
                model, loader, settings, setup.amp_dtype, device, masks, args.raw_masks
            )
        written = int(distributed.all_reduce_sum([written])[0])
        if context.is_main:
            kind = mask_kind(data.num_classes, args.raw_masks)
            print(f"wrote {written} masks to {masks}: {kind}")
    return scores


def run(argv: list[str] | None = None) -> int:
    """`main`, with the errors a user can act on printed as one line; returns the exit status."""
    return common.run_command(main, argv)
