"""segls.integrations.mmseg against mmsegmentation's own code.

The comparisons need mmsegmentation 1.2.2 (with mmengine and mmcv-lite; see
docs/INTEGRATIONS.md): they skip with the reason when it is absent, and fail instead when
SEGLS_REQUIRE_MMSEG=1 (as CI's mmseg step sets). mmcv-lite lacks mmcv's compiled ops, which
mmseg's model package imports at import time; `mmseg_models` then puts a stand-in for
``mmcv._ext`` (whose ops raise when called) before importing it. Nothing here stands in for
mmseg's losses, heads, sampler or segmentor.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segls.integrations.mmseg import SeglsCrossEntropyLoss, load_class_weight

CLASS_WEIGHT = [0.5, 1.0, 2.0, 1.5, 0.7]
NUM_CLASSES = len(CLASS_WEIGHT)


def _compiled_ops_stand_in() -> types.ModuleType:
    """``mmcv._ext`` for mmcv-lite: every op exists (mmcv checks at import) and raises if run."""
    ext = types.ModuleType("mmcv._ext")

    def op_named(name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def compiled_op(*args, **kwargs):
            raise RuntimeError(f"mmcv op {name} is compiled; mmcv-lite lacks it (test stand-in)")

        return compiled_op

    ext.__getattr__ = op_named
    return ext


def import_mmseg_models():
    """mmseg's MODELS registry, with its model package imported; skips (or fails) without it."""
    if importlib.util.find_spec("mmseg") is None:
        if os.environ.get("SEGLS_REQUIRE_MMSEG") == "1":
            pytest.fail("SEGLS_REQUIRE_MMSEG=1 but mmsegmentation is not installed")
        pytest.skip("mmsegmentation is not installed (docs/INTEGRATIONS.md says how)")
    try:
        importlib.import_module("mmcv._ext")
    except ImportError:
        sys.modules["mmcv._ext"] = _compiled_ops_stand_in()
    importlib.import_module("mmseg.models")
    from mmseg.registry import MODELS

    return MODELS


@pytest.fixture(scope="module")
def mmseg_models():
    return import_mmseg_models()


def _inputs(dtype, *, ignored=True, size=(2, NUM_CLASSES, 6, 7), seed=0):
    """Logits needing a gradient, labels (some ignored) and a 0/1 per-pixel weight like OHEM's."""
    generator = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(size, generator=generator, dtype=torch.float64)).to(dtype)
    labels = torch.randint(0, size[1], (size[0], *size[2:]), generator=generator)
    if ignored:
        labels[0, :2] = 255
        labels[1, :, :1] = 255
    pixel_weight = (torch.rand(labels.shape, generator=generator) < 0.6).to(dtype)
    return logits.requires_grad_(), labels, pixel_weight


def _mmseg_ce(monkeypatch, lb_smooth, **kwargs):
    """mmseg's CrossEntropyLoss; for lb_smooth > 0 its F.cross_entropy gets label_smoothing."""
    from mmseg.models.losses import cross_entropy_loss

    if lb_smooth:
        smoothing_f = types.SimpleNamespace(
            cross_entropy=functools.partial(F.cross_entropy, label_smoothing=lb_smooth)
        )
        monkeypatch.setattr(cross_entropy_loss, "F", smoothing_f)
    with warnings.catch_warnings():  # mmseg's advice to set avg_non_ignore=True
        warnings.simplefilter("ignore", UserWarning)
        return cross_entropy_loss.CrossEntropyLoss(**kwargs)


def _loss_and_grad(criterion, logits, labels, **kwargs):
    logits = logits.detach().requires_grad_()
    loss = criterion(logits, labels, ignore_index=255, **kwargs)
    upstream = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
    (loss * upstream).sum().backward()
    return loss.detach(), logits.grad


TOLERANCE = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=2e-6, atol=2e-6)}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("lb_smooth", [0.0, 0.1])
@pytest.mark.parametrize("loss_weight", [1.0, 0.4])
@pytest.mark.parametrize("reduction_override", [None, "none", "mean", "sum"])
@pytest.mark.parametrize("sampler_weight", [False, True])
@pytest.mark.parametrize("class_weight", [None, CLASS_WEIGHT])
@pytest.mark.parametrize("avg_non_ignore", [False, True])
def test_equals_mmseg_cross_entropy(
    mmseg_models,
    monkeypatch,
    avg_non_ignore,
    class_weight,
    sampler_weight,
    reduction_override,
    loss_weight,
    lb_smooth,
    dtype,
):
    # mmseg 1.2.2's 'mean' with class weights indexes them by the ignore label (IndexError):
    # it is compared there on labels without ignored pixels (and below against PyTorch)
    mean = reduction_override in (None, "mean")
    logits, labels, pixel_weight = _inputs(dtype, ignored=not (class_weight and mean))
    options = dict(class_weight=class_weight, loss_weight=loss_weight)
    options["avg_non_ignore"] = avg_non_ignore
    reference = _mmseg_ce(monkeypatch, lb_smooth, **options)
    ours = SeglsCrossEntropyLoss(use_sigmoid=False, lb_smooth=lb_smooth, **options)
    kwargs = dict(reduction_override=reduction_override)
    kwargs["weight"] = pixel_weight if sampler_weight else None
    expected, expected_grad = _loss_and_grad(reference, logits, labels, **kwargs)
    got, grad = _loss_and_grad(ours, logits, labels, **kwargs)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected.to(got.dtype), **TOLERANCE[dtype])
    torch.testing.assert_close(grad, expected_grad, **TOLERANCE[dtype])


@pytest.mark.parametrize("reduction_override", [None, "none"])
@pytest.mark.parametrize("lb_smooth", [0.0, 0.1])
def test_an_avg_factor_given_is_used_as_mmseg_uses_it(
    mmseg_models, monkeypatch, lb_smooth, reduction_override
):
    logits, labels, pixel_weight = _inputs(torch.float64)
    reference = _mmseg_ce(monkeypatch, lb_smooth, avg_non_ignore=True, loss_weight=0.4)
    ours = SeglsCrossEntropyLoss(avg_non_ignore=True, loss_weight=0.4, lb_smooth=lb_smooth)
    kwargs = dict(weight=pixel_weight, avg_factor=17.5, reduction_override=reduction_override)
    expected, expected_grad = _loss_and_grad(reference, logits, labels, **kwargs)
    got, grad = _loss_and_grad(ours, logits, labels, **kwargs)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="avg_factor can not be used"):
        ours(logits, labels, avg_factor=3.0, reduction_override="sum", ignore_index=255)


@pytest.mark.parametrize("avg_non_ignore", [False, True])
@pytest.mark.parametrize("sampler_weight", [False, True])
def test_fused_upsampling_equals_mmseg_on_the_upsampled_logits(
    mmseg_models, monkeypatch, avg_non_ignore, sampler_weight
):
    low, _, _ = _inputs(torch.float64, size=(2, NUM_CLASSES, 5, 6))
    _, labels, pixel_weight = _inputs(torch.float64, size=(2, NUM_CLASSES, 20, 24), seed=1)
    options = dict(avg_non_ignore=avg_non_ignore, loss_weight=0.4)
    reference = _mmseg_ce(monkeypatch, 0.1, **options)
    ours = SeglsCrossEntropyLoss(lb_smooth=0.1, upsample="bilinear", align_corners=True, **options)
    weight = pixel_weight if sampler_weight else None

    def upsampled(logits, labels, **kwargs):
        full = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=True)
        return reference(full, labels, **kwargs)

    expected, expected_grad = _loss_and_grad(upsampled, low, labels, weight=weight)
    got, grad = _loss_and_grad(ours, low, labels, weight=weight)
    # the same interpolation weights, summed in another order: float64 rounding apart
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("avg_non_ignore", [False, True])
def test_class_weights_with_ignored_pixels_average_as_documented(avg_non_ignore):
    logits, labels, _ = _inputs(torch.float64)
    weight = torch.tensor(CLASS_WEIGHT, dtype=torch.float64)
    ours = SeglsCrossEntropyLoss(class_weight=CLASS_WEIGHT, avg_non_ignore=avg_non_ignore)
    got = ours(logits, labels, ignore_index=255)
    per_pixel = F.cross_entropy(
        logits, labels, weight=weight, ignore_index=255, label_smoothing=0.1, reduction="none"
    )
    valid = labels != 255
    denominator = weight[labels[valid]].sum() + (0 if avg_non_ignore else (~valid).sum())
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(got, per_pixel.sum() / (denominator + eps), rtol=1e-12, atol=0)
    if avg_non_ignore:  # PyTorch's weighted mean
        expected = F.cross_entropy(
            logits, labels, weight=weight, ignore_index=255, label_smoothing=0.1
        )
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("class_weight", [None, CLASS_WEIGHT])
def test_unchecked_labels_outside_the_classes_count_as_ignored(class_weight):
    logits, labels, _ = _inputs(torch.float64)
    ignored = labels.clone()
    labels[0, 3, :3] = torch.tensor([-1, NUM_CLASSES, 100])
    ignored[0, 3, :3] = 255
    for avg_non_ignore in (False, True):
        ours = SeglsCrossEntropyLoss(
            class_weight=class_weight, avg_non_ignore=avg_non_ignore, check_labels=False
        )
        expected = ours(logits, ignored, ignore_index=255)
        torch.testing.assert_close(ours(logits, labels, ignore_index=255), expected)


def test_all_pixels_ignored_gives_zero_and_a_zero_gradient():
    logits, labels, _ = _inputs(torch.float32)
    labels[:] = 255
    loss, grad = _loss_and_grad(SeglsCrossEntropyLoss(avg_non_ignore=True), logits, labels)
    assert loss.item() == 0.0 and torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("flag", ["use_sigmoid", "use_mask"])
def test_sigmoid_and_mask_cross_entropy_are_refused_with_the_alternative(flag):
    with pytest.raises(ValueError, match=f"{flag}=True.*type='CrossEntropyLoss'"):
        SeglsCrossEntropyLoss(**{flag: True})
    assert SeglsCrossEntropyLoss(use_sigmoid=False, use_mask=False).loss_name == "loss_ce"


def test_bad_reductions_and_weight_shapes_are_refused():
    logits, labels, pixel_weight = _inputs(torch.float32)
    with pytest.raises(ValueError, match="reduction must be one of"):
        SeglsCrossEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match="reduction_override must be None or one of"):
        SeglsCrossEntropyLoss()(logits, labels, reduction_override="avg")
    with pytest.raises(ValueError, match="weight must have the labels' 3 dims"):
        SeglsCrossEntropyLoss()(logits, labels, weight=pixel_weight[:, None], ignore_index=255)


def test_class_weight_files_are_read_without_unpickling(tmp_path):
    expected = tuple(CLASS_WEIGHT)
    np.save(tmp_path / "w.npy", np.array(CLASS_WEIGHT))
    (tmp_path / "w.json").write_text(json.dumps(CLASS_WEIGHT))
    (tmp_path / "w.yaml").write_text("[" + ", ".join(map(str, CLASS_WEIGHT)) + "]\n")
    (tmp_path / "w.txt").write_text("0.5, 1.0\n2.0 1.5\n0.7\n")
    for name in ("w.npy", "w.json", "w.yaml", "w.txt"):
        assert load_class_weight(str(tmp_path / name)) == expected, name
        assert SeglsCrossEntropyLoss(class_weight=str(tmp_path / name)).class_weight == expected
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Object arrays cannot be loaded"):
        load_class_weight(str(tmp_path / "objects.npy"))
    (tmp_path / "w.pkl").write_bytes(b"not read")
    with pytest.raises(ValueError, match=r"pickle files can run code.*\.npy.*\.json"):
        load_class_weight(str(tmp_path / "w.pkl"))
    with pytest.raises(ValueError, match="unknown format '.csv'"):
        load_class_weight(str(tmp_path / "w.csv"))
    with pytest.raises(ValueError, match="finite and >= 0"):
        load_class_weight([1.0, -1.0])


def test_the_module_imports_without_mmseg():
    code = (
        "import sys; sys.modules['mmseg'] = None\n"  # as if not installed
        "import segls.integrations.mmseg\n"
        "print(sys.modules['mmseg'] is None)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"]


def test_custom_imports_in_a_config_file_registers_the_loss(mmseg_models, tmp_path):
    config = tmp_path / "config.py"
    config.write_text(
        "custom_imports = dict(imports=['segls.integrations.mmseg'], allow_failed_imports=False)\n"
        "loss_decode = dict(type='SeglsCrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)\n"
    )
    code = (
        "import sys\n"
        "from mmengine.config import Config\n"
        "from mmseg.registry import MODELS\n"
        "cfg = Config.fromfile(sys.argv[1])\n"
        "print('SeglsCrossEntropyLoss' in MODELS.module_dict)\n"
        "options = dict(cfg.loss_decode)\n"  # MODELS.build would import mmseg.models
        "loss = MODELS.module_dict[options.pop('type')](**options)\n"
        "print(type(loss).__name__, loss.loss_weight, loss.loss_name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(config)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "SeglsCrossEntropyLoss", "0.4", "loss_ce"]
