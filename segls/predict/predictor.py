"""Your own images' masks and overlays (``tools/infer.py``): read, batched, predicted, written.

An image is kept as it was stored (`segls.data.NormalisedImage`) and normalised a region at
a time: a window for the model in slide mode, a band of rows for the overlay. Only whole-image
prediction needs a batch's whole normalised images, and only while it runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from segls.config import Config
from segls.data import DataError, NormalisedImage, build_transform, read_image, resolve_classes
from segls.io import remove_files, write_png_rows
from segls.models import InferenceSettings, Windows, predict_classes
from segls.predict.evaluation import nonfinite_cause
from segls.predict.files import write_mask
from segls.predict.pictures import overlay_bands
from segls.runtime import is_out_of_memory

__all__ = ["Predictor"]


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
        raw_masks: bool = False,
    ) -> None:
        self.model, self.cfg, self.settings, self.amp_dtype = model, cfg, settings, amp_dtype
        self.device, self.out_dir, self.batch_size, self.alpha = device, out_dir, batch_size, alpha
        self.raw_masks = raw_masks
        self.transform = build_transform(cfg.data, train=False)
        self.palette = resolve_classes(cfg.data)[1]
        self.pending: dict[tuple[int, int], list[tuple[NormalisedImage, str]]] = {}
        self.written = 0
        self.refused: list[tuple[str, str]] = []  # (name, why): predictions not written

    def load(self, path: Path) -> NormalisedImage:
        """The C×H×W image, normalised when read; DataError/OSError naming `path` if unusable."""
        image = read_image(path)
        channels = self.cfg.data.in_channels
        if image.shape[2] != channels:
            raise DataError(
                f"{path}: image has {image.shape[2]} channels but data.in_channels={channels}; "
                "use images like the training ones or a config for this channel count"
            )
        return NormalisedImage(image, self.transform)

    def add(self, image: NormalisedImage, name: str) -> int:
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

    def _run(self, group: list[tuple[NormalisedImage, str]]) -> int:
        """Predict one batch of same-size images and write their files; returns the count.

        An image whose prediction holds NaN or inf, or that does not fit in memory (alone),
        gets no files: it goes to `refused`. A batch that does not fit is retried image by image.
        """
        try:
            predictions, finite = self._predict([image for image, _ in group])
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            if len(group) > 1:
                return sum(self._run([item]) for item in group)
            self._refuse_for_memory(group[0], error)
            return 1
        for position, (image, name) in enumerate(group):
            if not finite[position]:
                cause = nonfinite_cause(image.is_finite())
                self.refused.append(
                    (name, f"its prediction holds NaN or inf, so no files: {cause}")
                )
                continue
            try:
                self._write(image, predictions[position], name)
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                self._refuse_for_memory((image, name), error)
                continue
            self.written += 1
        return len(group)

    def _predict(self, images: list[NormalisedImage]) -> tuple[torch.Tensor, list[bool]]:
        """(N×H×W class ids on the CPU, N finite flags) of same-size images."""

        def read(rows: slice, cols: slice) -> torch.Tensor:
            regions = [image[:, rows, cols] for image in images]
            batch = regions[0].unsqueeze(0) if len(regions) == 1 else torch.stack(regions)
            return batch.to(self.device)

        windows = Windows((len(images), *images[0].shape), read)
        ids, finite = predict_classes(self.model, windows, self.settings, self.amp_dtype)
        return ids.cpu(), finite.tolist()

    def _write(self, image: NormalisedImage, prediction: torch.Tensor, name: str) -> None:
        """Write one image's mask and overlay; neither is left behind if either fails."""
        data = self.cfg.data
        mask_path = self.out_dir / f"{name}_mask.png"
        try:
            write_mask(mask_path, prediction, self.palette, self.raw_masks)
            bands = overlay_bands(image, prediction, self.palette, data.mean, data.std, self.alpha)
            write_png_rows(self.out_dir / f"{name}_overlay.png", image.shape[-2:], bands)
        except BaseException:
            remove_files([mask_path])
            raise

    def _refuse_for_memory(self, item: tuple[NormalisedImage, str], error: BaseException) -> None:
        """Note that an image is too large to predict here, with what to do instead."""
        image, name = item
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        height, width = image.shape[-2:]
        hint = (
            "use a smaller --crop"
            if self.settings.mode == "slide"
            else "use --mode slide --crop H W, which holds one row of windows at a time"
        )
        self.refused.append((
            name,
            f"not enough memory to predict this {height}x{width} image on {self.device} "
            f"({_first_line(error)}); {hint}, or split the image",
        ))  # fmt: skip


def _first_line(error: BaseException) -> str:
    """What failed, in a few words: the size of the allocation, or the error's first line."""
    found = re.search(r"tried to allocate (\d+) bytes", str(error))
    if found:
        return f"an allocation of {int(found.group(1)) / 2**20:.0f} MiB failed"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
