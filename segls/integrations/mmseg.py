"""The segls loss for mmsegmentation 1.x configs, with mmseg's loss contract.

``custom_imports=dict(imports=['segls.integrations.mmseg'])`` in a config imports this module,
which registers ``SeglsCrossEntropyLoss`` into ``mmseg.registry.MODELS``; then
``loss_decode=dict(type='SeglsCrossEntropyLoss', loss_weight=1.0, avg_non_ignore=True)``.
The module imports without mmseg (it registers nothing then); the loss needs torch alone.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from segls.losses import label_smooth_softmax_ce

__all__ = ["FusedUpsampleHeadMixin", "SeglsCrossEntropyLoss", "load_class_weight"]

MMSEG_REDUCTIONS = ("none", "mean", "sum")
PICKLE_SUFFIXES = (".pkl", ".pickle")
# mmseg adds it to every denominator (weight_reduce_loss, accuracy), so an all-ignored batch
# gives 0 rather than NaN
_EPS = torch.finfo(torch.float32).eps


def load_class_weight(class_weight: Sequence[float] | str | None) -> tuple[float, ...] | None:
    """Class weights from a list or a file: .npy, .json, .yaml/.yml or .txt (numbers).

    mmseg also reads pickles (with ``mmengine.load``); loading a pickle can run any code, so
    this refuses them and names the safe formats instead.
    """
    if class_weight is None:
        return None
    if isinstance(class_weight, str | Path):
        class_weight = _read_class_weight_file(Path(class_weight))
    values = torch.as_tensor(class_weight, dtype=torch.float64)
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(f"class_weight must be a flat list of numbers; got {class_weight!r}")
    if not torch.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"class_weight must be finite and >= 0; got {values.tolist()}")
    return tuple(values.tolist())


def _read_class_weight_file(path: Path) -> object:
    """The numbers a class-weight file holds, read without unpickling anything."""
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise ValueError(
            f"class_weight file {path}: pickle files can run code when loaded, so segls does not "
            "read them; save the weights as .npy (numpy.save), .json, .yaml or .txt instead"
        )
    if suffix not in (".npy", ".json", ".yaml", ".yml", ".txt"):
        raise ValueError(
            f"class_weight file {path}: unknown format {suffix!r}; use .npy, .json, .yaml or .txt"
        )
    if suffix == ".npy":
        import numpy as np

        return np.load(path, allow_pickle=False).tolist()
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        return json.loads(text)
    if suffix == ".txt":
        return [float(token) for token in text.replace(",", " ").split()]
    import yaml

    return yaml.safe_load(text)


class SeglsCrossEntropyLoss(torch.nn.Module):
    """Label-smoothing softmax CE with mmseg's ``CrossEntropyLoss`` arguments and reductions.

    The per-pixel loss is ``F.cross_entropy(label_smoothing=lb_smooth, weight=class_weight,
    reduction='none')``'s; ``weight`` (per pixel, e.g. from ``OHEMPixelSampler``),
    ``avg_factor``, ``reduction_override`` and ``loss_weight`` then act as in mmseg. With
    ``lb_smooth=0`` it is mmseg's ``CrossEntropyLoss``. ``avg_non_ignore=False`` (mmseg's
    default) divides the sum by all pixels, ``True`` by the valid ones (with class weights: by
    the sum of the pixels' label-class weights; an ignored pixel then weighs 1 when it
    counts, where mmseg 1.2.2 raises IndexError). ``upsample='bilinear'`` takes logits smaller
    than the labels and equals the loss of their bilinear upsampling (``align_corners`` as
    the head's) without forming the full-resolution logits.
    """

    def __init__(
        self,
        use_sigmoid: bool = False,
        use_mask: bool = False,
        reduction: str = "mean",
        class_weight: Sequence[float] | str | None = None,
        loss_weight: float = 1.0,
        loss_name: str = "loss_ce",
        avg_non_ignore: bool = False,
        lb_smooth: float = 0.1,
        upsample: str | None = None,
        align_corners: bool = False,
        check_labels: bool = True,
    ) -> None:
        super().__init__()
        if use_sigmoid or use_mask:
            flag = "use_sigmoid" if use_sigmoid else "use_mask"
            raise ValueError(
                f"SeglsCrossEntropyLoss is a softmax cross-entropy; {flag}=True asks for mmseg's "
                "binary (sigmoid) or mask cross-entropy: use type='CrossEntropyLoss' for that"
            )
        if reduction not in MMSEG_REDUCTIONS:
            raise ValueError(f"reduction must be one of {MMSEG_REDUCTIONS}; got {reduction!r}")
        self.reduction = reduction
        self.class_weight = load_class_weight(class_weight)
        self.loss_weight = float(loss_weight)
        self.avg_non_ignore = bool(avg_non_ignore)
        self.lb_smooth = float(lb_smooth)
        self.upsample = upsample
        self.align_corners = bool(align_corners)
        self.check_labels = bool(check_labels)
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        """The key of this loss in the head's loss dict; mmseg backpropagates ``loss_*`` keys."""
        return self._loss_name

    def extra_repr(self) -> str:
        return (
            f"lb_smooth={self.lb_smooth}, avg_non_ignore={self.avg_non_ignore}, "
            f"loss_weight={self.loss_weight}, upsample={self.upsample!r}"
        )

    def forward(
        self,
        cls_score: torch.Tensor,
        label: torch.Tensor,
        weight: torch.Tensor | None = None,
        avg_factor: float | torch.Tensor | None = None,
        reduction_override: str | None = None,
        ignore_index: int = -100,
    ) -> torch.Tensor:
        """The loss of (N, C, h, w) logits for (N, H, W) labels, as mmseg's CE computes it."""
        if reduction_override not in (None, *MMSEG_REDUCTIONS):
            raise ValueError(
                f"reduction_override must be None or one of {MMSEG_REDUCTIONS}; "
                f"got {reduction_override!r}"
            )
        reduction = reduction_override or self.reduction
        if avg_factor is not None and reduction == "sum":
            raise ValueError('avg_factor can not be used with reduction="sum"')  # as mmseg
        class_weight = None
        if self.class_weight is not None:
            dtype = torch.float64 if cls_score.dtype == torch.float64 else torch.float32
            class_weight = torch.tensor(self.class_weight, dtype=dtype, device=cls_score.device)
        per_pixel = reduction == "none" or weight is not None
        loss = label_smooth_softmax_ce(
            cls_score,
            label,
            self.lb_smooth,
            ignore_index=ignore_index,
            reduction="none" if per_pixel else "sum",
            weight=class_weight,
            check_labels=self.check_labels,
            upsample=self.upsample,
            align_corners=self.align_corners,
        )
        if weight is not None:
            if weight.dim() != loss.dim():
                raise ValueError(
                    f"weight must have the labels' {loss.dim()} dims (N, H, W); "
                    f"got shape {tuple(weight.shape)}"
                )
            loss = loss * weight.float()
        if reduction == "none":
            return self.loss_weight * loss
        total = loss.sum() if per_pixel else loss
        if reduction == "sum":
            return self.loss_weight * total
        if avg_factor is None:
            avg_factor = self._avg_factor(label, ignore_index, class_weight, cls_score.shape[1])
        if isinstance(avg_factor, torch.Tensor):  # mmseg's is a Python number: as precise
            avg_factor = avg_factor.to(total.dtype)
        return self.loss_weight * (total / (avg_factor + _EPS))

    def _avg_factor(
        self,
        label: torch.Tensor,
        ignore_index: int,
        class_weight: torch.Tensor | None,
        num_classes: int,
    ) -> int | torch.Tensor:
        """mmseg's denominator of 'mean': all pixels, or the valid ones; class-weighted if any.

        Counted on the device: no host sync (mmseg's ``.item()`` makes one). A label outside
        [0, C) (only with ``check_labels=False``) is not valid, as in the loss.
        """
        if class_weight is None and not self.avg_non_ignore:
            return label.numel()
        valid_mask = (label != ignore_index) & (label >= 0) & (label < num_classes)
        if class_weight is None:
            return valid_mask.sum()
        safe_label = torch.where(valid_mask, label, 0).long()
        label_weights = class_weight[safe_label] * valid_mask
        if not self.avg_non_ignore:
            label_weights = label_weights + (~valid_mask).to(label_weights.dtype)
        return label_weights.sum()


class FusedUpsampleHeadMixin:
    """``loss_by_feat`` for an mmseg decode head whose losses take ``upsample='bilinear'``.

    Put it before the head class: ``class FusedFCNHead(FusedUpsampleHeadMixin, FCNHead)``.
    The losses get the head's low-resolution logits and the full-resolution labels, so no
    full-resolution logits with a gradient exist; ``acc_seg`` is mmseg's accuracy of the
    upsampled prediction, computed under no_grad one image at a time. A sampler (OHEM) needs
    full-resolution logits: they are formed under no_grad for it and freed. Heads whose
    losses do not all upsample fall back to mmseg's ``loss_by_feat``.
    """

    def loss_by_feat(self, seg_logits: torch.Tensor, batch_data_samples: list) -> dict:
        """The head's loss dict (``loss_*`` keys and ``acc_seg``), as mmseg's ``loss_by_feat``."""
        losses_decode = self.loss_decode
        if isinstance(losses_decode, torch.nn.Module) and not isinstance(
            losses_decode, torch.nn.ModuleList
        ):
            losses_decode = [losses_decode]
        if not all(getattr(module, "upsample", None) for module in losses_decode):
            return super().loss_by_feat(seg_logits, batch_data_samples)
        for module in losses_decode:
            if module.align_corners != self.align_corners:
                raise ValueError(
                    f"{module.loss_name}: align_corners={module.align_corners} but the head "
                    f"upsamples with align_corners={self.align_corners}; set the loss's to match"
                )
        seg_label = self._stack_batch_gt(batch_data_samples)
        seg_weight = None
        if self.sampler is not None:
            with torch.no_grad():
                full = self._upsample(seg_logits, seg_label.shape[2:])
                seg_weight = self.sampler.sample(full, seg_label)
                del full
        seg_label = seg_label.squeeze(1)
        loss: dict[str, torch.Tensor] = {}
        for module in losses_decode:
            value = module(seg_logits, seg_label, weight=seg_weight, ignore_index=self.ignore_index)
            name = module.loss_name
            loss[name] = loss[name] + value if name in loss else value
        loss["acc_seg"] = self._upsampled_accuracy(seg_logits, seg_label)
        return loss

    def _upsample(self, seg_logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """The logits as mmseg's ``resize`` upsamples them in ``loss_by_feat``."""
        return F.interpolate(
            seg_logits, size=tuple(size), mode="bilinear", align_corners=self.align_corners
        )

    @torch.no_grad()
    def _upsampled_accuracy(
        self, seg_logits: torch.Tensor, seg_label: torch.Tensor
    ) -> torch.Tensor:
        """mmseg's top-1 ``accuracy`` (percent, shape (1,)) of the upsampled logits."""
        valid_mask = seg_label != self.ignore_index
        correct = seg_logits.new_zeros((), dtype=torch.int64)
        for logits, label, valid in zip(seg_logits, seg_label, valid_mask, strict=True):
            prediction = self._upsample(logits[None], label.shape).argmax(dim=1)[0]
            correct += ((prediction == label) & valid).sum()
        percent_per_pixel = (100.0 / (valid_mask.sum().double() + _EPS)).float()
        return ((correct.float() + _EPS) * percent_per_pixel).reshape(1)


def _register() -> None:
    """Register the loss into mmseg's model registry, when mmseg is installed."""
    if importlib.util.find_spec("mmseg") is None:
        return
    from mmseg.registry import MODELS

    MODELS.register_module(module=SeglsCrossEntropyLoss, force=True)


_register()
