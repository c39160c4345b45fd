"""The loss as the criterion of other codebases' models: smp and torchvision."""

import segmentation_models_pytorch as smp
import torch
from torchvision.models.segmentation import deeplabv3_resnet50

from segls.losses import LabelSmoothSoftmaxCE


def _one_step_lowers_loss(model, forward, channels=3, classes=3, size=64):
    torch.manual_seed(0)
    images = torch.randn(2, channels, size, size)
    labels = torch.randint(0, classes, (2, size, size))
    labels[:, :4] = 255
    criterion = LabelSmoothSoftmaxCE(0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.eval()  # fixed batch-norm statistics: the second loss is comparable to the first
    before = criterion(forward(model, images), labels)
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = criterion(forward(model, images), labels)
    assert after.item() < before.item()


def test_smp_unet():
    model = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=3)
    _one_step_lowers_loss(model, lambda m, x: m(x))


def test_torchvision_deeplabv3_output_dict():
    model = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=3, aux_loss=False)
    _one_step_lowers_loss(model, lambda m, x: m(x)["out"])
