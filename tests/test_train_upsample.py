"""Training with ``loss.upsample: fused``, and what a fused-trained checkpoint predicts.

Golden values: the same training steps with ``outside`` (smp's own head upsampling, then the
loss), and for the first step ``F.cross_entropy`` of smp's full-resolution logits; for
predictions, the same checkpoint loaded into the model smp builds with its upsampling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F
from helpers import read_events, tiny_config, write_dataset
from PIL import Image

from segls import config
from segls.cli import infer as infer_cli
from segls.cli import test as test_cli
from segls.models import build_model, forward_padded
from segls.predict import build_criterion
from segls.predict.export import PaddedModel
from segls.train import build_objective, checkpoint, train, train_one_iter
from segls.train.optim import build_optimizer

TINY_DEEPLAB = {
    "arch": "DeepLabV3Plus",
    "encoder": "tu-test_resnet",
    "kwargs": {"decoder_channels": 16},
}


@pytest.fixture(autouse=True)
def one_thread():
    """One thread, as the tiny config trains (conftest puts the count back)."""
    torch.set_num_threads(1)


def deeplab_setup(upsample: str, lovasz_weight: float = 0.0):
    """(config, DeepLabV3+/ResNet-18 at its random init (the same for both), images, labels)."""
    cfg = tiny_config(
        Path("unused"),
        model={"arch": "DeepLabV3Plus", "encoder": "resnet18", "kwargs": {}},
        loss={"upsample": upsample, "lovasz_weight": lovasz_weight},
        optimizer={"type": "sgd", "lr": 0.01},
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, 2, 3, "outside")
    if upsample == "fused":
        fused = build_model(cfg.model, 2, 3, "fused")
        fused.load_state_dict(model.state_dict())
        model = fused
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 2, 64, 64, generator=generator)
    labels = torch.randint(0, 3, (2, 64, 64), generator=generator)
    labels[:, :3] = 255
    return cfg, model, images, labels


def train_steps(upsample: str, lovasz_weight: float, steps: int) -> tuple[list[float], dict]:
    """Losses of `steps` SGD steps on one batch, and the first step's gradients."""
    cfg, model, images, labels = deeplab_setup(upsample, lovasz_weight)
    objective = build_objective(cfg, build_criterion(cfg))
    optimizer = build_optimizer(model, cfg.optimizer)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    torch.manual_seed(1)  # the ASPP's dropout masks
    losses, first_grads = [], {}
    for _ in range(steps):
        step = train_one_iter(model, objective, images, labels, optimizer, scaler)
        losses.append(float(step.loss))
        if not first_grads:
            first_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return losses, first_grads


@pytest.mark.parametrize("lovasz_weight", [0.0, 1.0])
def test_fused_training_losses_equal_outside_step_by_step(lovasz_weight):
    """Equal to float rounding, which the steps amplify: measured relative differences
    1e-7, 1.3e-7 and up to 1.5e-5 (with the Lovász term) at steps 1, 2 and 3.

    Any change of summation order makes two runs part like this (the same `outside` run on
    1 and on 2 threads parts as fast; docs/BENCHMARKS.md).
    """
    outside, outside_grads = train_steps("outside", lovasz_weight, 3)
    fused, fused_grads = train_steps("fused", lovasz_weight, 3)
    np.testing.assert_allclose(fused[:2], outside[:2], rtol=1e-6)
    np.testing.assert_allclose(fused[2], outside[2], rtol=1e-4)
    for name, grad in outside_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-4, atol=1e-7, msg=name)


def test_the_first_fused_loss_is_pytorchs_on_smps_upsampled_logits():
    _, model, images, labels = deeplab_setup("outside")
    torch.manual_seed(1)
    with torch.no_grad():
        logits = model.train()(images)
    expected = F.cross_entropy(logits, labels, ignore_index=255, label_smoothing=0.1)
    assert train_steps("fused", 0.0, 1)[0][0] == pytest.approx(float(expected), rel=1e-6)


def test_a_fused_run_scores_infers_and_draws_at_full_resolution(tmp_path):
    data = write_dataset(tmp_path / "data")
    cfg = tiny_config(
        data,
        model=TINY_DEEPLAB,
        loss={"upsample": "fused", "lovasz_weight": 1.0},
        schedule={"max_iters": 2},
        runtime={"vis_samples": 1},
    )
    work_dir = tmp_path / "run"
    scores = train(cfg, work_dir)
    image = read_events(work_dir).Images("val/sample_0")[-1]
    # a 2×2 grid (tests/test_train_logger.py); panel() refuses a prediction not at 32×32
    assert min(image.height, image.width) >= 2 * 32
    config_path, weights = str(work_dir / "config.yaml"), str(work_dir / "latest.pth")
    assert config.load(config_path).loss.upsample == "fused"

    tested = test_cli.main([config_path, weights, "--out", str(tmp_path / "t0")])
    assert tested["mIoU"] == pytest.approx(scores["mIoU"])
    views = ["--flip", "--scales", "0.75", "1.25"]
    fused = test_cli.main([config_path, weights, *views, "--out", str(tmp_path / "t1")])
    outside = test_cli.main(
        [config_path, weights, *views, "--out", str(tmp_path / "t2"), "loss.upsample=outside"]
    )
    for key in ("mIoU", "aAcc", "ECE", "NLL", "loss"):
        assert fused[key] == pytest.approx(outside[key], rel=1e-5, abs=1e-7), key

    odd = tmp_path / "odd.tif"  # off the stride: padded, upsampled, cropped back
    tifffile.imwrite(odd, tifffile.imread(data / "images" / "val" / "s0.tif")[3:24, 1:32])
    masks = []
    for index, overrides in enumerate([[], ["loss.upsample=outside"]]):
        out = tmp_path / f"infer{index}"
        assert infer_cli.main([config_path, weights, str(odd), "--out", str(out), *overrides]) == 0
        masks.append(np.array(Image.open(out / "odd_mask.png")))
    assert masks[0].shape == (21, 31)
    np.testing.assert_array_equal(masks[0], masks[1])


def test_the_exported_graph_upsamples_a_fused_model():
    """What `tools/export.py` traces (`PaddedModel`) predicts at full resolution.

    The ONNX export itself (torch.export with dynamic sizes) of a fused DeepLabV3+ was run
    once and matched within 6e-8; it costs some 20 s, so the suite checks the module.
    """
    model_cfg = config.ModelConfig(**TINY_DEEPLAB)
    torch.manual_seed(0)
    full = build_model(model_cfg, 2, 3).eval()
    fused = build_model(model_cfg, 2, 3, "fused").eval()
    fused.load_state_dict(checkpoint.unwrap_model(full).state_dict())
    images = torch.randn(2, 2, 21, 35)
    with torch.no_grad():
        exported = PaddedModel(fused, 16)(images)
        expected = forward_padded(full, images)
    assert exported.shape == (2, 3, 21, 35)
    torch.testing.assert_close(exported, expected, rtol=1e-6, atol=1e-6)
