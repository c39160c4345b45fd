"""Tests of models built for ``loss.upsample: fused``: heads without their final upsampling.

Golden values come from smp itself: the same weights in the model smp builds with its head's
upsampling (``nn.Upsample(bilinear, align_corners=True)``), whose logits a fused model's
predictions must equal in every inference mode.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from segls.models import InferenceSettings, build_model, forward_padded, predict_logits
from segls.models.factory import HEAD_UPSAMPLING_ARCHS
from segls.models.names import has_head_upsampling

# Each arch's final upsampling factor, from smp's constructor defaults.
FACTORS = {
    "FPN": 4,
    "PAN": 4,
    "UPerNet": 4,
    "Segformer": 4,
    "DeepLabV3Plus": 4,
    "PSPNet": 8,
    "DeepLabV3": 8,
}
FULL_RESOLUTION_DECODERS = ["Unet", "UnetPlusPlus", "Linknet", "MAnet"]
# Narrow decoders, for speed.
NARROW = {
    "FPN": {"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32},
    "PAN": {"decoder_channels": 16},
    "UPerNet": {"decoder_channels": 32},
    "Segformer": {"decoder_segmentation_channels": 32},
    "DeepLabV3Plus": {"decoder_channels": 32},
    "PSPNet": {"psp_out_channels": 32},
    "DeepLabV3": {"decoder_channels": 32},
}


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: many small operations (conftest puts the count back)."""
    torch.set_num_threads(1)


def model_cfg(arch: str, **kwargs) -> SimpleNamespace:
    return SimpleNamespace(arch=arch, encoder="tu-test_resnet", encoder_weights=None, kwargs=kwargs)


def model_pair(arch: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(smp's model with its head upsampling, the fused build holding the same weights)."""
    torch.manual_seed(0)
    full = build_model(model_cfg(arch, **NARROW[arch]), 2, 3).eval()
    fused = build_model(model_cfg(arch, **NARROW[arch]), 2, 3, loss_upsample="fused").eval()
    fused.load_state_dict(full.state_dict())  # strict: a fused checkpoint is an smp one
    return full, fused


def test_the_table_names_every_arch_with_a_head_upsampling():
    assert sorted(cls.__name__ for cls in HEAD_UPSAMPLING_ARCHS) == sorted(FACTORS)
    assert all(has_head_upsampling(arch) for arch in FACTORS)
    assert not any(has_head_upsampling(arch) for arch in FULL_RESOLUTION_DECODERS)
    assert has_head_upsampling("no-such-arch") is None


@pytest.mark.parametrize("arch", list(FACTORS))
def test_fused_predictions_equal_smps_head_upsampling(arch):
    full, fused = model_pair(arch)
    images = torch.randn(1, 2, 128, 160)  # PAN's pyramid needs 128 pixels
    with torch.no_grad():
        low = fused(images)
        expected = full(images)
        predicted = forward_padded(fused, images)
    factor = FACTORS[arch]
    assert low.shape == (1, 3, 128 // factor, 160 // factor)
    assert predicted.shape == expected.shape == (1, 3, 128, 160)
    torch.testing.assert_close(predicted, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "settings",
    [
        InferenceSettings(),
        InferenceSettings(flip=True, scales=(0.75, 1.25)),
        InferenceSettings(mode="slide", crop_size=(48, 48), stride=(32, 32)),
    ],
    ids=["whole", "flip+scales", "slide"],
)
def test_every_inference_mode_predicts_at_full_resolution(settings):
    full, fused = model_pair("DeepLabV3Plus")
    images = torch.randn(1, 2, 45, 70)  # off the stride (16): padded, upsampled, cropped
    expected = predict_logits(full, images, settings=settings)
    predicted = predict_logits(fused, images, settings=settings)
    assert predicted.shape == (1, 3, 45, 70)
    torch.testing.assert_close(predicted, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", FULL_RESOLUTION_DECODERS)
def test_fused_is_refused_for_heads_without_upsampling(arch):
    with pytest.raises(ValueError, match=f"{arch} decodes to full resolution.*outside"):
        build_model(model_cfg(arch), 2, 3, loss_upsample="fused")


def test_an_explicit_upsampling_clashes_with_fused_unless_it_is_1():
    with pytest.raises(ValueError, match="model.kwargs.upsampling = 4 clashes"):
        build_model(model_cfg("FPN", upsampling=4), 2, 3, loss_upsample="fused")
    narrow = model_cfg("FPN", upsampling=1, **NARROW["FPN"])
    model = build_model(narrow, 2, 3, loss_upsample="fused")
    with torch.no_grad():
        assert model(torch.randn(1, 2, 64, 64)).shape[-2:] == (16, 16)
    with pytest.raises(ValueError, match="loss.upsample must be one of outside, fused; got 'x'"):
        build_model(model_cfg("FPN"), 2, 3, loss_upsample="x")
