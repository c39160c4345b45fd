"""Run records: console + train.log lines, TensorBoard and metrics.jsonl.

Everything a run writes about itself goes through `RunLogger`, into its work directory:
``train.log`` (the console lines), ``events.out.tfevents.*`` (TensorBoard) and
``metrics.jsonl`` (one JSON object per evaluation, NaN written as null).

Besides scalars and images, TensorBoard gets, when a run starts (`RunLogger.record_config`):
the resolved config as text; a custom-scalars layout that draws mIoU with the per-class IoU,
and the train loss with the val loss, in one chart each; and the run's HParams (the key
settings, with the val scores as its metrics), written into the run's own events file so
that runs side by side, e.g. tools/compare_smoothing.py's, line up in the HParams dashboard.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams
from tqdm import tqdm

from segls.config import Config, to_dict, to_yaml
from segls.io import append_text, json_safe, write_text

__all__ = [
    "CUSTOM_SCALARS",
    "HPARAMS",
    "HPARAM_METRICS",
    "RunLogger",
    "TrainWindow",
    "format_duration",
]

# The settings shown in TensorBoard's HParams dashboard (lists as text; unset ones left out).
HPARAMS = (
    "name",
    "model.arch",
    "model.encoder",
    "loss.lb_smooth",
    "loss.lb_pos",
    "loss.lb_neg",
    "loss.lovasz_weight",
    "optimizer.type",
    "optimizer.lr",
    "optimizer.weight_decay",
    "optimizer.ema_decay",
    "schedule.max_iters",
    "data.batch_size",
    "data.crop_size",
    "eval.flip",
    "runtime.amp",
    "runtime.seed",
)
HPARAM_METRICS = ("val/mIoU", "val/ECE", "val/NLL", "val/mAcc", "val/loss", "train/loss")
CUSTOM_SCALARS = {
    "segls": {
        "val mIoU and per-class IoU": ["Multiline", [r"^val/mIoU$", r"^val/IoU/"]],
        "loss: train and val": ["Multiline", [r"^train/loss$", r"^val/loss$"]],
        "val calibration: ECE, NLL, Brier": ["Multiline", [r"^val/(ECE|NLL|Brier)$"]],
    }
}

_TRAIN_FIELDS = {
    "train/loss": "loss {:.4f}",
    "train/lr": "lr {:.3e}",
    "train/images_per_s": "{:.1f} img/s",
    "train/grad_norm": "grad norm {:.3f}",
    "train/grad_scale": "scale {:.0f}",
    "train/skipped_steps": "skipped {:.0f}",
    "train/peak_mem_mb": "mem {:.0f} MB",
}


def hparam_values(cfg: Config) -> dict[str, float | str]:
    """The `HPARAMS` settings of `cfg`: numbers as they are, the rest as text, unset left out."""
    tree, values = to_dict(cfg), {}
    for key in HPARAMS:
        value = tree
        for part in key.split("."):
            value = value[part]
        if value is None or value == "":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            value = json.dumps(value)  # true/false, [64, 64]
        values[key] = value
    return values


def format_duration(seconds: float) -> str:
    """Seconds as H:MM:SS."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _wait_for_a_later_second(work_dir: Path) -> None:
    """Sleep (under a second) until a new event file would sort after the existing ones.

    TensorBoard reads a directory's event files in name order, and names start with a
    whole-second timestamp; a resumed run's purge only works if its file comes last.
    """
    stamps = []
    for path in work_dir.glob("events.out.tfevents.*"):
        stamp = path.name.split(".")[3]
        if stamp.isdigit():
            stamps.append(int(stamp))
    wait = max(stamps) + 1 - time.time() if stamps else 0.0
    if 0 < wait <= 1:
        time.sleep(wait)


def _scalars_at(work_dir: Path, step: int) -> list[tuple[str, float, float]]:
    """(tag, value, wall time) of the scalars TensorBoard shows at `step`, but the val/* ones."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    guidance = {"scalars": 0, "images": 1, "tensors": 1, "histograms": 1, "audio": 1}
    events = EventAccumulator(str(work_dir), size_guidance=guidance)
    events.Reload()
    kept = []
    for tag in events.Tags()["scalars"]:
        if not tag.startswith("val/"):
            points = [e for e in events.Scalars(tag) if e.step == step]
            kept += [(tag, e.value, e.wall_time) for e in points[-1:]]
    return kept


class TrainWindow:
    """Training statistics since the last log line; losses stay on the device until asked."""

    def __init__(self) -> None:
        self.loss_sum: torch.Tensor | float = 0.0
        self.iterations = 0
        self.images = 0
        self.skipped = 0
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor, batch_size: int, skipped: bool) -> None:
        """Count one training step."""
        self.loss_sum = self.loss_sum + loss
        self.iterations += 1
        self.images += batch_size
        self.skipped += int(skipped)

    def summary(self) -> dict[str, float]:
        """Mean loss and images per second over the window."""
        seconds = max(time.perf_counter() - self.start, 1e-9)
        return {
            "train/loss": float(self.loss_sum) / max(self.iterations, 1),
            "train/images_per_s": self.images / seconds,
        }


class RunLogger:
    """Writes one run's records into `work_dir`; resumed runs append after `start_iter`.

    TensorBoard events and metrics.jsonl rows after `start_iter` (left by an interrupted
    run, or by an earlier run in the same directory) are dropped, so the records read as one
    continuous run. An inactive logger (`active` False: the ranks other than 0 of a
    multi-process run) writes and prints nothing. A `deferred` logger touches nothing on
    disk until `open`: lines logged before are printed at once and written to train.log then.
    """

    def __init__(
        self, work_dir: str | Path, start_iter: int = 0, active: bool = True, deferred: bool = False
    ) -> None:
        self.work_dir = Path(work_dir)
        self.active = active
        self.start_iter = start_iter
        self.metrics_path = self.work_dir / "metrics.jsonl"
        self.log_path = self.work_dir / "train.log"
        self.writer: SummaryWriter | None = None
        self._unwritten: list[str] = []  # train.log lines logged before `open`
        if not deferred:
            self.open()

    def open(self, eval_pending: bool = False) -> None:
        """Create the work dir and start the records (once; nothing for an inactive logger).

        `eval_pending`: the checkpoint resumed from predates the evaluation due at its
        iteration. Unless metrics.jsonl holds that evaluation's row (written last, see
        `evaluation`), the run redoes it, so TensorBoard hides every event from that step on,
        whatever part of the evaluation a killed run wrote; the other scalars of that step (the
        train/* of its log line) are written again, as they were.
        """
        if not self.active or self.writer is not None:
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._trim_metrics(self.start_iter)
        redo = eval_pending and self.start_iter > 0 and self.metrics_row(self.start_iter) is None
        kept = _scalars_at(self.work_dir, self.start_iter) if redo else []
        _wait_for_a_later_second(self.work_dir)
        purge_step = self.start_iter if redo else self.start_iter + 1
        self.writer = SummaryWriter(str(self.work_dir), purge_step=purge_step)
        for tag, value, wall_time in kept:
            self.writer.add_scalar(tag, value, self.start_iter, walltime=wall_time)
        unwritten, self._unwritten = self._unwritten, []
        if unwritten:
            append_text(self.log_path, "".join(unwritten))

    def record_config(self, cfg: Config, step: int = 0) -> None:
        """Record the run's config as text, its HParams and the custom-scalars layout."""
        if not self.active:
            return
        self.writer.add_text("config", f"```yaml\n{to_yaml(cfg)}```", step)
        self.writer.add_custom_scalars(CUSTOM_SCALARS)
        experiment, session_start, _ = hparams(hparam_values(cfg), dict.fromkeys(HPARAM_METRICS))
        for summary in (experiment, session_start):
            self.writer.file_writer.add_summary(summary, step)
        self.writer.flush()

    def info(self, message: str) -> None:
        """Print `message` (above any progress bar) and append it to train.log."""
        if not self.active:
            return
        tqdm.write(message, file=sys.stdout)
        self.record(message)

    def record(self, message: str) -> None:
        """Append `message` to train.log only (e.g. an error the command line prints itself)."""
        if not self.active:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        lines = "".join(f"{stamp} {line}\n" for line in message.splitlines() or [""])
        if self.writer is None:
            self._unwritten.append(lines)
        else:
            append_text(self.log_path, lines)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Add TensorBoard scalars; NaN values (undefined scores) are left out."""
        if not self.active:
            return
        for tag, value in values.items():
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(tag, value, step)

    def train_line(
        self, iteration: int, max_iters: int, values: dict[str, float], eta_seconds: float
    ) -> None:
        """Record train/* scalars and print them as one line with the ETA."""
        self.scalars(values, iteration)
        parts = [f"iter {iteration}/{max_iters}"]
        parts += [form.format(values[tag]) for tag, form in _TRAIN_FIELDS.items() if tag in values]
        self.info(" | ".join([*parts, f"eta {format_duration(eta_seconds)}"]))

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """Add a uint8 H×W×3 image to TensorBoard."""
        if not self.active:
            return
        self.writer.add_image(tag, image, step, dataformats="HWC")

    def evaluation(
        self,
        step: int,
        scores: dict,
        class_names: list[str],
        images: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Record one evaluation as one unit: val/* scalars and `images`, then its metrics.jsonl row.

        The row is written last, after TensorBoard's events are flushed: a run killed before
        it left no row, and its resume redoes the evaluation with the partial events purged
        (`open`); one killed after it left every record.
        """
        if not self.active:
            return
        keys = ("loss", "mIoU", "mAcc", "aAcc", "mDice", "ECE", "NLL", "Brier")
        summary = {key: scores[key] for key in keys if key in scores}
        values = {f"val/{key}": value for key, value in summary.items()}
        for name, iou in zip(class_names, scores["IoU"], strict=True):
            values[f"val/IoU/{name}"] = iou
        self.scalars(values, step)
        for tag, image in (images or {}).items():
            self.image(tag, image, step)
        self.writer.flush()
        row = {"iter": step, **json_safe(scores), "class_names": list(class_names)}
        append_text(self.metrics_path, json.dumps(row, allow_nan=False) + "\n")

    def close(self) -> None:
        """Flush and close the event file; a second call does nothing. train.log still appends."""
        if self.writer is not None:
            self.writer.close()

    def metrics_row(self, iteration: int) -> dict | None:
        """The metrics.jsonl row of the evaluation at `iteration`, or None if there is none."""
        if not self.metrics_path.is_file():
            return None
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and row.get("iter") == iteration:
                return row
        return None

    def _trim_metrics(self, start_iter: int) -> None:
        """Drop metrics.jsonl rows after `start_iter`; start a new file for a fresh run."""
        if not self.metrics_path.exists():
            return
        kept = []
        if start_iter > 0:
            for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line)["iter"] <= start_iter:
                        kept.append(line + "\n")
                except (ValueError, KeyError, TypeError):
                    continue
        write_text(self.metrics_path, "".join(kept))
