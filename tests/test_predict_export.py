"""Tests of tools/export.py: the ONNX file run by onnxruntime on the CPU against PyTorch.

Stated tolerance: onnxruntime's logits equal PyTorch's (`forward_padded`) within
``atol = rtol = 1e-4``; measured differences are about 1e-6 (README, Export).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from helpers import save_checkpoint, tiny_config

from segls import config
from segls.cli import export as export_cli
from segls.models import forward_padded
from segls.predict import export as onnx_export

TOLERANCE = 1e-4


def test_onnx_export_matches_pytorch_at_other_batch_and_spatial_sizes(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    config_path = tmp_path / "tiny.yaml"
    config.dump(cfg, config_path)
    model = save_checkpoint(cfg, tmp_path / "best.pth")
    out = tmp_path / "export" / "model.onnx"
    assert export_cli.main([str(config_path), str(tmp_path / "best.pth"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ema weights" in printed and "(ok)" in printed
    assert [path.name for path in out.parent.iterdir()] == ["model.onnx"]  # no temp file left

    graph = onnx.load(out).graph
    assert [node.name for node in graph.input] == ["images"]
    assert [node.name for node in graph.output] == ["logits"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [bool(dim.dim_param) for dim in dims] == [True, False, True, True]  # N, H, W dynamic

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    # The example traced was 2×2×64×64; stride 8: 24×40 is a multiple, 21×35 and 9×70 are not.
    for shape in [(1, 2, 24, 40), (3, 2, 21, 35), (2, 2, 9, 70)]:
        images = torch.randn(*shape, generator=generator)
        (logits,) = session.run(["logits"], {"images": images.numpy()})
        with torch.no_grad():
            expected = forward_padded(model, images).numpy()
        assert logits.shape == (shape[0], 3, *shape[2:])
        np.testing.assert_allclose(logits, expected, atol=TOLERANCE, rtol=TOLERANCE)


def test_missing_packages_name_the_install_command(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec

    def without_onnxscript(name, *args):
        return None if name == "onnxscript" else real_find_spec(name, *args)

    monkeypatch.setattr(onnx_export.importlib.util, "find_spec", without_onnxscript)
    with pytest.raises(ImportError, match=r"onnxscript.*pip install -e '\.\[export\]'"):
        onnx_export.export_onnx(torch.nn.Conv2d(1, 1, 1), tmp_path / "m.onnx", 1)
    assert not (tmp_path / "m.onnx").exists()
