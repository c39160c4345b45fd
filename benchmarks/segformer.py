"""Peak memory of Segformer's own loss (upsample, then cross-entropy) against segls'
``upsample='bilinear'``: the loss alone and the whole training step, on the CPU.

    python -m benchmarks.segformer [--batch 4] [--classes 19] [--size 512] [--model b0|tiny]

- ``loss``: (N, C, S/4, S/4) float32 logits against (N, S, S) labels (5 % ignored), loss +
  backward to the logits. Segformer's: ``F.interpolate(..., align_corners=False)`` then
  ``F.cross_entropy(ignore_index=255)``, as ``SegformerForSemanticSegmentation`` computes it
  when given labels; segls': ``label_smooth_softmax_ce(..., upsample='bilinear')``.
- ``step``: forward of a randomly initialised ``SegformerForSemanticSegmentation`` on
  (N, 3, S, S) images, the loss, backward to the weights. Segformer's is
  ``model(pixel_values, labels=labels).loss``; segls' takes ``model(pixel_values).logits``.

Each figure comes from a child process of its own started with `memory.LIVE_PEAK_ENV`, after
one warm-up step: the peak of the live allocations above what is live before the step (the
inputs and the weights). Needs transformers.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

from benchmarks.losses import run_child
from benchmarks.memory import peak_of
from benchmarks.reference import IGNORE, make_inputs
from segls.losses import label_smooth_softmax_ce

__all__ = ["LOSSES", "MODELS", "main", "measure"]

EPS = 0.1
MODELS = {  # SegformerConfig arguments besides num_labels; b0 is SegformerConfig's default
    "b0": {},
    "tiny": {"hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1], "decoder_hidden_size": 64},
}
LOSSES = {
    "upsample then CE (Segformer's)": lambda logits, labels: F.cross_entropy(
        F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False),
        labels,
        ignore_index=IGNORE,
    ),
    "segls upsample='bilinear'": lambda logits, labels: label_smooth_softmax_ce(
        logits, labels, EPS, ignore_index=IGNORE, upsample="bilinear", align_corners=False
    ),
}
SEGFORMER = next(iter(LOSSES))


def _loss_step(spec: dict):
    logits, labels = make_inputs(
        (spec["batch"], spec["classes"], spec["size"] // 4, spec["size"] // 4),
        label_size=(spec["size"], spec["size"]),
    )
    logits.requires_grad_()
    loss_fn = LOSSES[spec["variant"]]

    def step() -> None:
        loss_fn(logits, labels).backward()
        logits.grad = None

    return step


def _training_step(spec: dict):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    config = SegformerConfig(num_labels=spec["classes"], **MODELS[spec["model"]])
    torch.manual_seed(0)
    model = SegformerForSemanticSegmentation(config)
    images = torch.randn(spec["batch"], 3, spec["size"], spec["size"])
    _, labels = make_inputs((spec["batch"], spec["classes"], spec["size"], spec["size"]))
    own_loss = spec["variant"] == SEGFORMER

    def step() -> None:
        if own_loss:
            loss = model(pixel_values=images, labels=labels).loss
        else:
            loss = LOSSES[spec["variant"]](model(pixel_values=images).logits, labels)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def run_worker(spec: dict) -> dict:
    """One variant's warm-up step, then its peak memory (this is the child)."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    step = (_loss_step if spec["what"] == "loss" else _training_step)(spec)
    step()
    return {"peak_mib": peak_of(step, torch.device("cpu"))}


def measure(spec: dict) -> list[dict]:
    """Every variant of the loss and of the step, each in a child process of its own."""
    results = []
    for what in ("loss", "step"):
        for variant in LOSSES:
            worker = json.dumps({**spec, "what": what, "variant": variant})
            result = run_child("benchmarks.segformer", ["--worker", worker], live_peak=True)
            results.append({"what": what, "variant": variant, **result})
    return results


def format_table(results: list[dict]) -> str:
    """A markdown table: peak MiB of each variant and its ratio to Segformer's own loss."""
    lines = ["| measured | variant | peak MiB | vs Segformer's |", "|---|---|---:|---:|"]
    for result in results:
        reference = next(
            r for r in results if r["what"] == result["what"] and r["variant"] == SEGFORMER
        )
        ratio = result["peak_mib"] / reference["peak_mib"]
        lines.append(
            f"| {result['what']} | {result['variant']} | {result['peak_mib']:.1f} | {ratio:.3f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure in child processes (or, with --worker, be one of them); print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--size", type=int, default=512, help="image and label side")
    parser.add_argument("--model", choices=list(MODELS), default="b0")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0
    import transformers

    spec = {key: getattr(args, key) for key in ("batch", "classes", "size", "model", "threads")}
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{args.threads or torch.get_num_threads()} threads; logits "
        f"{args.batch}×{args.classes}×{args.size // 4}×{args.size // 4}, labels "
        f"{args.size}×{args.size}, 5% ignored; Segformer {args.model}, random weights"
    )
    print(format_table(measure(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
