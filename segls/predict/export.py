"""Export a segmentation model to ONNX with dynamic batch size, height and width.

The exported graph takes ``images`` (N×C×H×W float32, normalised like the training data)
and returns ``logits`` (N×num_classes×H×W float32). Like `segls.models.forward_padded`, it
pads the input at the bottom and right to a multiple of the encoder's output stride
(reflecting the image) and crops the logits back, so any H and W of at least the stride
work (32 for most encoders).

It uses PyTorch's ``torch.export``-based exporter (``dynamo=True``), which needs the
``onnx`` and ``onnxscript`` packages (``pip install -e '.[export]'``; nothing is downloaded
at run time). It is the exporter PyTorch maintains; the TorchScript one (``dynamo=False``)
is faster and also handles the padding, but it is deprecated. Neither can export PSPNet
with dynamic sizes (adaptive pooling), so check an export with onnxruntime before use
(``tools/export.py`` does).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segls.io import write_through_path
from segls.models import forward_padded, full_resolution, output_stride

__all__ = ["INSTALL_HINT", "TOLERANCE", "PaddedModel", "export_onnx", "require", "verify"]

INSTALL_HINT = "pip install -e '.[export]'"
TOLERANCE = 1e-4  # |onnx - torch| <= TOLERANCE * (1 + |torch|), elementwise
_MAX_SIZE = 65536  # upper bound of the dynamic dimensions, needed by torch.export


def require(*packages: str) -> None:
    """Raise ImportError naming the packages that are not installed and how to install them."""
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"ONNX export needs {', '.join(missing)}, which is not installed: {INSTALL_HINT}"
        )


class PaddedModel(nn.Module):
    """`model` on input padded to a multiple of `stride`, logits at full resolution, cropped."""

    def __init__(self, model: nn.Module, stride: int) -> None:
        super().__init__()
        self.model = model
        self.stride = int(stride)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2], images.shape[-1]
        pad_h = (self.stride - height % self.stride) % self.stride
        pad_w = (self.stride - width % self.stride) % self.stride
        padded = F.pad(images, (0, pad_w, 0, pad_h), mode="reflect")
        logits = full_resolution(self.model(padded), padded.shape[-2:])
        return logits[..., :height, :width]


def export_onnx(
    model: nn.Module, path: str | os.PathLike, in_channels: int, example_size: int = 64
) -> Path:
    """Write `model` as ONNX to `path` (atomically, `segls.io`) with dynamic batch, height and width.

    `model` is exported in eval mode on the CPU in float32; `example_size` is the height and
    width of the example input that is traced (any multiple of the stride).
    """
    require("onnx", "onnxscript")
    path = Path(path)
    stride = output_stride(model)
    wrapped = PaddedModel(model, stride).to("cpu", torch.float32).eval()
    size = max(stride, example_size - example_size % stride)
    example = torch.zeros(2, in_channels, size, size)
    batch = torch.export.Dim("batch", min=1, max=_MAX_SIZE)
    height = torch.export.Dim("height", min=stride, max=_MAX_SIZE)
    width = torch.export.Dim("width", min=stride, max=_MAX_SIZE)
    shapes = {"images": {0: batch, 2: height, 3: width}}

    def export_to(temp_path: Path) -> None:
        torch.onnx.export(
            wrapped,
            (example,),
            temp_path,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=shapes,
            dynamo=True,
            external_data=False,
            verbose=False,
        )

    write_through_path(path, export_to, suffix=".onnx")
    return path


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
